"""Static analysis of a serverless worker: where does it load its model?

A worker must load its model once, when the module is imported, and never inside the handler (a
per-request load is a cold start per request, and OOM). Names are resolved the way Python would
run them, within the image's own files (every .py file of the template directory): imports with
`as`, relative imports, module-level aliases (`load = torch.load`, `run = lambda job: ...`),
functions of other modules, classes (a constructor runs `__init__`), methods of module-level
objects and of `self`. A call whose resolved name is one of the policy's loaders is a load, and so
is starting a process whose command is one of the policy's model servers (`vllm serve ...` through
subprocess.Popen: the server loads the model, the handler forwards to it). That the worker waits for
the server before `runpod.serverless.start` is checked where it runs: smoke's model.serve.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from buildtool.errors import Location
from buildtool.pymodules import (
    DictValue,
    External,
    Function,
    HandlerProblem,
    ImageModules,
    Module,
    Target,
)

# Calls that start a process; with a model server's command, the process loads the model.
SPAWNERS = (
    "subprocess.Popen",
    "asyncio.create_subprocess_exec",
    "asyncio.create_subprocess_shell",
    "os.posix_spawn",
    "os.posix_spawnp",
    "os.spawnv",
    "os.spawnvp",
    "os.spawnl",
    "os.spawnlp",
)


def _named(target: Target, names: tuple[str, ...]) -> str | None:
    if isinstance(target, External):
        name = target.name.removesuffix("()")
        if any(name == wanted or name.endswith("." + wanted) for wanted in names):
            return name
    return None


def _command_text(module: Module, call: ast.Call) -> str:
    """The string constants of a call's arguments, with module-level names they use expanded once
    (`CMD = ["vllm", "serve", MODEL]; Popen(CMD)`), joined by spaces."""
    words = []
    for argument in [*call.args, *(k.value for k in call.keywords)]:
        for node in ast.walk(argument):
            if isinstance(node, ast.Name) and node.id in module.bindings:
                node = module.bindings[node.id]
            for inner in ast.walk(node):
                if isinstance(inner, ast.Constant) and isinstance(inner.value, str):
                    words.append(inner.value)
    return " ".join(words)


def _loads(module: Module, call: ast.Call, target: Target, loaders: Loaders) -> str | None:
    """What the call loads the model with, if it does: a loader's name, or a model server."""
    calls_loader = _named(target, loaders.calls)
    if calls_loader:
        return f"{calls_loader}(...)"
    if _named(target, SPAWNERS):
        command = _command_text(module, call)
        for server in loaders.servers:
            if server in command:
                return f"a '{server}' server process"
    return None


@dataclass(frozen=True)
class Loaders:
    calls: tuple[str, ...]  # policy.model_loaders
    servers: tuple[str, ...] = ()  # policy.model_servers


def _handler_expression(image: ImageModules, module: Module) -> tuple[ast.expr | None, bool]:
    """The value of "handler" in runpod.serverless.start(config), and whether start was called."""
    started = False
    for node in ast.walk(module.tree):
        if not isinstance(node, ast.Call):
            continue
        target = image.resolve(module, node.func, None)
        if not (isinstance(target, External) and target.name.endswith("serverless.start")):
            continue
        started = True
        config = image.resolve(module, node.args[0], None) if node.args else None
        if isinstance(config, DictValue):
            if isinstance(config.node, ast.Dict):
                for key, value in zip(config.node.keys, config.node.values, strict=True):
                    if isinstance(key, ast.Constant) and key.value == "handler":
                        return value, True
            elif isinstance(config.node, ast.Call):
                for keyword in config.node.keywords:
                    if keyword.arg == "handler":
                        return keyword.value, True
    return None, started


def analyse(path: Path, loaders: Loaders) -> list[HandlerProblem]:
    """What is wrong with where the worker `path` loads its model; empty when nothing is."""
    try:
        return _analyse(path, loaders)
    except RecursionError:
        return [
            HandlerProblem(
                "the worker's calls nest too deeply to follow",
                Location(path, 1),
                "flatten the chain of calls from the handler, or split the worker into smaller modules",
            )
        ]


def _analyse(path: Path, loaders: Loaders) -> list[HandlerProblem]:
    image = ImageModules(path.parent)
    module = image.load(path)
    if module is None:
        return image.problems
    expression, started = _handler_expression(image, module)
    if not started:
        return [
            HandlerProblem(
                "the handler module never calls runpod.serverless.start({'handler': fn})",
                Location(path, 1),
                'end it with runpod.serverless.start({"handler": handler})',
            )
        ]
    handler = image.resolve(module, expression, None) if expression is not None else None
    if not isinstance(handler, Function):
        shown = ast.unparse(expression) if expression is not None else "?"
        return [
            HandlerProblem(
                f"the handler '{shown}' is not a function of the image's own files",
                Location(path, expression.lineno if expression is not None else 1),
                "pass a function (or lambda, or method) defined in the worker's modules",
            )
        ]
    name = getattr(handler.node, "name", "<lambda>")
    problems = []
    for where, call, target in image.follow(handler, set()):
        loader = _loads(where, call, target, loaders)
        if loader:
            problems.append(
                HandlerProblem(
                    f"the handler '{name}' loads its model per request ({loader})",
                    Location(where.path, call.lineno),
                    f"load the model once at module level (model = ... above def {name}) and use it "
                    "inside the handler",
                )
            )
    if problems:
        return image.problems + problems
    # Module-level code runs once per worker: the import of the handler module, with the image's
    # own modules it imports (their module-level code) and what that code calls.
    seen: set[int] = {id(handler.node)}
    modules_done: set[str] = set()

    def module_level(mod: Module) -> Iterator[tuple[Module, ast.Call, Target]]:
        if mod.name in modules_done:
            return
        modules_done.add(mod.name)
        for qualified in mod.imports.values():
            for candidate in (qualified, qualified.rpartition(".")[0]):
                local = image.module(candidate) if candidate else None
                if local is not None:
                    yield from module_level(local)
        yield from image.reached(mod, mod.tree.body, None, seen)

    if not any(_loads(where, call, target, loaders) for where, call, target in module_level(module)):
        servers = f", or start a model server ({', '.join(loaders.servers)})" if loaders.servers else ""
        problems.append(
            HandlerProblem(
                "the handler module loads no model at module level",
                Location(path, 1),
                f"call one of {', '.join(loaders.calls)} at module level{servers}",
            )
        )
    return image.problems + problems
