"""Rules over each image's template directory, once per plan: the worker's handler module and the
image's Python dependency lock."""

from __future__ import annotations

from collections.abc import Iterator

from buildtool.config.model import Image
from buildtool.errors import Finding
from buildtool.locks import deps
from buildtool.policy import handlers
from buildtool.policy.registry import Context, error, rule, warning
from buildtool.policy.secrets import HINT, looks_secret, redacted


@rule(
    "handler",
    "template",
    "a model loaded per request is a cold start per request, and an OOM (seeds: serverless pitfalls)",
)
def handler(image: Image, context: Context) -> Iterator[Finding]:
    """The handler module loads its model at module level, never inside the handler function."""
    if image.handler is None:
        return
    policy = context.matrix.policy
    loaders = handlers.Loaders(policy.model_loaders, policy.model_servers)
    for p in handlers.analyse(image.template / image.handler, loaders):
        # What the analysis cannot see (exec, a computed import) is said, not passed in silence.
        yield (warning if handlers.severity(p) == "warning" else error)(p.message, p.where, p.hint)


@rule("dependency-lock", "template", "a rebuild on another day must install the same files")
def dependency_lock(image: Image, context: Context) -> Iterator[Finding]:
    """Python packages come from a lock with hashes, transitive ones included, that agrees with the
    image's requirements.in."""
    for p in deps.lock_problems(image.template, image.name):
        yield error(p.message, p.where, p.hint)


@rule(
    "args-secrets",
    "template",
    "a build arg's value is recorded in the image's history for anyone to read; a deploy setting's "
    "is stored in plain text in the RunPod template",
)
def args_secrets(image: Image, context: Context) -> Iterator[Finding]:
    places = [("build arg", name, value, image.location) for name, value in image.args]
    if image.deploy:
        where = image.deploy.env_location or image.deploy.location
        places += [("deploy.env", name, value, where) for name, value in image.deploy.env]
    for place, name, value, where in places:
        for kind, secret in looks_secret(name, value):
            yield error(
                f"image '{image.name}' passes {kind} as {place} {name}: {redacted(secret)}",
                where,
                HINT if place == "build arg" else f"name it under the image's secrets: [{name}] instead",
            )
