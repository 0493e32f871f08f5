"""A rehearsal of the GitHub Actions workflows on this machine: each job's steps run in order, as a
runner runs them, against the local engine and a registry:2 standing in for GHCR.

- `run:` steps: `bash --noprofile --norc -eo pipefail` in the job's workspace, with the variables and
  files a runner gives (GITHUB_OUTPUT, GITHUB_ENV, GITHUB_PATH, GITHUB_STEP_SUMMARY, RUNNER_TEMP, ...).
- `${{ }}` expressions and `if:` conditions evaluated (tests/expressions.py); a reference to an output,
  matrix key or job that was never set is an error, where GitHub would quietly give ''.
- Actions are replaced by what they do: checkout = a clone of the repository at the commit;
  setup-python = a Python 3.11 on PATH (one per rehearsal, like a runner's tool cache); upload and
  download-artifact = copies under artifacts/<name>/ with their if-no-files-found, overwrite, pattern
  and merge-multiple semantics; login-action = checks that it logs in to the registry pushed to.
  An action it does not know fails the step.
- Shims on PATH for what cannot happen here: `sudo` (runs the command; logs and skips rm and docker
  prune, which would remove this machine's files and images), `systemctl` (logs), and `gh`
  (tests/gh_standin.py, GitHub's side of runs, artifacts and releases).
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from expressions import Context, Evaluator, ExpressionError, Lenient, substitute, to_string, truthy

HERE = Path(__file__).resolve().parent
KNOWN_ACTIONS = (
    "actions/checkout",
    "actions/setup-python",
    "actions/upload-artifact",
    "actions/download-artifact",
    "docker/setup-buildx-action",
    "docker/login-action",
)


class RehearsalError(AssertionError):
    """The workflow would fail on GitHub (or cannot be rehearsed): what and where."""


@dataclass
class StepRun:
    name: str
    outcome: str  # success, failure, skipped
    conclusion: str
    outputs: dict[str, str]
    log: str = ""
    new_env: dict[str, str] = field(default_factory=dict)  # what it wrote to GITHUB_ENV
    summary: str = ""  # what it appended to GITHUB_STEP_SUMMARY


@dataclass
class JobRun:
    workflow: str
    job: str
    matrix: dict[str, Any] | None
    result: str  # success, failure, skipped
    outputs: dict[str, str]
    steps: list[StepRun] = field(default_factory=list)

    @property
    def log(self) -> str:
        return "\n".join(f"--- {s.name}: {s.outcome}\n{s.log}" for s in self.steps)

    def need(self) -> dict[str, Any]:
        return {"result": self.result, "outputs": Context(f"needs.{self.job}.outputs", self.outputs)}


@dataclass(frozen=True)
class Event:
    name: str  # push, pull_request
    ref: str  # refs/heads/main, refs/tags/v0.0.1

    @property
    def ref_name(self) -> str:
        return self.ref.split("/", 2)[-1]


def status_functions(failed: bool) -> dict[str, Callable[[], bool]]:
    """success(), always(), cancelled(), failure() for an `if:`, given whether something failed."""
    return {
        "success": lambda: not failed,
        "always": lambda: True,
        "cancelled": lambda: False,
        "failure": lambda: failed,
    }


def value_of(value: Any, evaluator: Evaluator) -> str:
    """An input or env value as the runner passes it: a string (YAML's true is 'true')."""
    return to_string(substitute(value, evaluator) if isinstance(value, str) else value)


def step_name(step: Mapping[str, Any], index: int) -> str:
    return str(
        step.get("name") or step.get("uses") or (step.get("run") or "").split("\n")[0] or f"step {index}"
    )


def parse_file_command(text: str) -> dict[str, str]:
    """name=value lines and name<<DELIMITER blocks, as the runner reads GITHUB_OUTPUT and GITHUB_ENV."""
    values: dict[str, str] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line:
            continue
        heredoc = re.fullmatch(r"([^=<]+)<<(.+)", line)
        if heredoc:
            name, delimiter = heredoc.groups()
            body = []
            while i < len(lines) and lines[i] != delimiter:
                body.append(lines[i])
                i += 1
            if i == len(lines):
                raise RehearsalError(f"{name}<<{delimiter} has no closing {delimiter} line")
            i += 1
            values[name] = "\n".join(body)
        elif "=" in line:
            name, value = line.split("=", 1)
            values[name] = value
        else:
            raise RehearsalError(f"invalid line in a file command: {line!r} (GitHub fails the step)")
    return values


class Rehearsal:
    def __init__(
        self,
        root: Path,
        source: Path,
        registry_host: str,
        repository: str = "RunPod-Images/runpod-images",
    ) -> None:
        self.root = root
        self.source = source  # a git repository holding the commit (and tags) under test
        self.sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True, check=True
        ).stdout.strip()
        self.registry_host = registry_host
        self.repository = repository
        self.artifacts = root / "artifacts"  # this workflow run's artifacts
        self.shims = root / "shims"
        self.toolcache = root / "toolcache"
        self.log = root / "shims.log"
        self.daemon_config = root / "daemon.json"
        self.jobs = 0
        self.steps_run = 0
        self.run_ids = 0
        self.gh_state = root / "github.json"
        self.releases = root / "releases"
        self.runs: list[dict[str, Any]] = []
        for path in (self.artifacts, self.shims, self.toolcache, self.releases):
            path.mkdir(parents=True, exist_ok=True)
        # What a hosted runner's daemon.json holds before the workflow touches it.
        self.daemon_config.write_text(
            '{"exec-opts": ["native.cgroupdriver=cgroupfs"], "cgroup-parent": "/actions_job"}\n'
        )
        self._write_shims()
        self._save_state()

    # --- the runner's surroundings -------------------------------------------------------------

    def _write_shims(self) -> None:
        shims = {
            "sudo": f"""#!/bin/sh
echo "sudo $*" >> "{self.log}"
case "$1" in
  rm) exit 0 ;;
  docker) case "$*" in *prune*) exit 0 ;; esac ;;
esac
exec "$@"
""",
            "systemctl": f'#!/bin/sh\necho "systemctl $*" >> "{self.log}"\n',
            "gh": f'#!/bin/sh\nexec "{sys.executable}" "{HERE / "gh_standin.py"}" "$@"\n',
        }
        for name, text in shims.items():
            path = self.shims / name
            path.write_text(text)
            path.chmod(0o755)

    def _save_state(self) -> None:
        self.gh_state.write_text(
            json.dumps({"repository": self.repository, "runs": self.runs, "releases": str(self.releases)})
        )

    def record_run(self, workflow: str, event: Event, conclusion: str) -> dict[str, Any]:
        """The workflow run as GitHub lists it afterwards (gh run list / download)."""
        self.run_ids += 1
        run_id = 1000 + self.run_ids
        kept = self.root / f"run-{run_id}-artifacts"
        shutil.copytree(self.artifacts, kept)
        run = {
            "databaseId": run_id,
            "workflow": workflow,
            "headSha": self.sha,
            "event": event.name,
            "status": "completed" if conclusion in ("success", "failure", "cancelled") else conclusion,
            "conclusion": conclusion if conclusion in ("success", "failure", "cancelled") else None,
            "url": f"https://github.com/{self.repository}/actions/runs/{run_id}",
            "artifacts": str(kept),
        }
        self.runs.append(run)
        self._save_state()
        return run

    def python(self) -> Path:
        """The tool cache's Python 3.11 (made once): a virtual environment off this interpreter's base."""
        home = self.toolcache / "Python" / "3.11" / "x64"
        if not (home / "bin" / "python").exists():
            base = getattr(sys, "_base_executable", sys.executable)
            subprocess.run([base, "-m", "venv", str(home)], check=True, capture_output=True)
        return home

    # --- a job ---------------------------------------------------------------------------------

    def workflow(self, name: str) -> dict[str, Any]:
        checkout = self.source / ".github" / "workflows" / name
        document: dict[str, Any] = yaml.safe_load(checkout.read_text())
        document["_file"] = name
        return document

    def matrix_entries(
        self, workflow: dict[str, Any], job: str, needs: Mapping[str, JobRun], event: Event
    ) -> list[dict[str, Any]]:
        strategy = workflow["jobs"][job].get("strategy", {})
        if "matrix" not in strategy:
            return []
        evaluator = self._evaluator(event, needs=needs, matrix=None, env={}, steps={}, status={})
        matrix = (
            substitute(strategy["matrix"], evaluator)
            if isinstance(strategy["matrix"], str)
            else strategy["matrix"]
        )
        if set(matrix) != {"include"}:
            raise RehearsalError(f"{job}: the rehearsal expands include-only matrices, not {sorted(matrix)}")
        return list(matrix["include"])

    def _evaluator(
        self,
        event: Event,
        *,
        needs: Mapping[str, JobRun],
        matrix: dict[str, Any] | None,
        env: Mapping[str, str],
        steps: Mapping[str, StepRun],
        status: Mapping[str, Callable[[], bool]],
        workspace: Path | None = None,
        temp: Path | None = None,
    ) -> Evaluator:
        github = Context(
            "github",
            {
                "event_name": event.name,
                "ref": event.ref,
                "ref_name": event.ref_name,
                "sha": self.sha,
                "repository": self.repository,
                "repository_owner": self.repository.split("/")[0],
                "actor": "rehearsal-bot",
                "token": "ghs_rehearsal",
                "workspace": str(workspace or ""),
                "run_id": "1",
                "event": {},
            },
        )
        contexts = {
            "github": github,
            "env": Context("env", env),
            "secrets": Context("secrets", {"GITHUB_TOKEN": "ghs_rehearsal"}),
            "vars": Context("vars", {}),
            "runner": Context("runner", {"os": "Linux", "arch": "X64", "temp": str(temp or "")}),
            "needs": Context("needs", {name: run.need() for name, run in needs.items()}),
            "steps": Context(
                "steps",
                {
                    sid: {
                        "outcome": s.outcome,
                        "conclusion": s.conclusion,
                        "outputs": Context(f"steps.{sid}.outputs", s.outputs)
                        if s.outcome == "success"
                        else Lenient(s.outputs),
                    }
                    for sid, s in steps.items()
                },
            ),
        }
        if matrix is not None:
            contexts["matrix"] = Context("matrix", matrix)
        return Evaluator(contexts, status)

    def job(
        self,
        workflow: dict[str, Any],
        job_id: str,
        event: Event,
        needs: Mapping[str, JobRun] | None = None,
        matrix: dict[str, Any] | None = None,
    ) -> JobRun:
        """Run one job (one matrix entry) to the end; its result, outputs and each step's log."""
        needs = dict(needs or {})
        job = workflow["jobs"][job_id]
        missing = [n for n in job.get("needs", []) if n not in needs]
        if missing:
            raise RehearsalError(f"{job_id} needs {missing}: rehearse those jobs first")
        name = f"{workflow['_file']} {job_id}" + (f" {matrix}" if matrix else "")
        needs_ok = all(needs[n].result == "success" for n in job.get("needs", []))
        job_status = status_functions(not needs_ok)
        condition = job.get("if", "success()")
        top = self._evaluator(event, needs=needs, matrix=matrix, env={}, steps={}, status=job_status)
        if not self._condition(condition, top, name):
            return JobRun(workflow["_file"], job_id, matrix, "skipped", {})

        self.jobs += 1
        base = self.root / f"job-{self.jobs}-{job_id}"
        workspace, temp = base / "workspace", base / "temp"
        workspace.mkdir(parents=True)
        temp.mkdir()
        runs_on = substitute(job["runs-on"], top) if isinstance(job["runs-on"], str) else job["runs-on"]
        labels = runs_on if isinstance(runs_on, list) else [runs_on]
        hosted = "self-hosted" not in labels
        timeout = 60 * int(job.get("timeout-minutes", 360))
        env: dict[str, str] = {}
        path_prefix: list[str] = [str(self.shims)]
        steps: dict[str, StepRun] = {}
        record = JobRun(workflow["_file"], job_id, matrix, "success", {})

        def evaluator(status: Mapping[str, Callable[[], bool]]) -> Evaluator:
            return self._evaluator(
                event,
                needs=needs,
                matrix=matrix,
                env=env,
                steps=steps,
                status=status,
                workspace=workspace,
                temp=temp,
            )

        for scope in (workflow.get("env", {}), job.get("env", {})):
            for key, value in scope.items():
                env[key] = value_of(value, evaluator(job_status))
        if workflow.get("env", {}).get("REGISTRY_HOST"):
            env["REGISTRY_HOST"] = self.registry_host  # GHCR's stand-in

        failed = False
        for index, step in enumerate(job["steps"], 1):
            status = status_functions(failed)
            label = step_name(step, index)
            if not self._condition(step.get("if", "success()"), evaluator(status), f"{name} step {label!r}"):
                run = StepRun(label, "skipped", "skipped", {})
            else:
                step_env = dict(env)
                for key, value in step.get("env", {}).items():
                    step_env[key] = value_of(value, evaluator(status))
                run = self._step(
                    step,
                    label,
                    step_env,
                    path_prefix,
                    workspace,
                    temp,
                    hosted,
                    event,
                    evaluator(status),
                    timeout,
                    job_id,
                )
                if run.outcome == "failure" and truthy(step.get("continue-on-error", False)):
                    run.conclusion = "success"
                failed = failed or run.conclusion == "failure"
            record.steps.append(run)
            if "id" in step:
                steps[step["id"]] = run
            env.update(run.new_env)
        if failed:
            record.result = "failure"
            return record
        outputs_evaluator = evaluator(job_status)
        for key, value in job.get("outputs", {}).items():
            try:
                record.outputs[key] = to_string(substitute(str(value), outputs_evaluator))
            except ExpressionError as exc:
                raise RehearsalError(f"{name}: output {key}: {exc}") from exc
        return record

    @staticmethod
    def _condition(condition: Any, evaluator: Evaluator, where: str) -> bool:
        text = str(condition)
        inner = re.fullmatch(r"\s*\$\{\{(.*)\}\}\s*", text, re.S)
        expression = inner.group(1) if inner else text
        if not re.search(r"\b(success|always|cancelled|failure)\(\)", expression):
            expression = f"success() && ({expression})"
        try:
            return truthy(evaluator.evaluate(expression))
        except ExpressionError as exc:
            raise RehearsalError(f"{where}: if: {text}: {exc}") from exc

    # --- a step --------------------------------------------------------------------------------

    def _step(
        self,
        step: Mapping[str, Any],
        label: str,
        env: dict[str, str],
        path_prefix: list[str],
        workspace: Path,
        temp: Path,
        hosted: bool,
        event: Event,
        evaluator: Evaluator,
        timeout: int,
        job_id: str,
    ) -> StepRun:
        self.steps_run += 1
        files = {name: temp / f"{name}-{self.steps_run}" for name in ("output", "env", "path", "summary")}
        for f in files.values():
            f.write_text("")
        runner_env = {
            "PATH": ":".join([*reversed(path_prefix), os.environ["PATH"]]),
            "HOME": os.environ.get("HOME", "/root"),
            "LANG": "C.UTF-8",
            "CI": "true",
            "GITHUB_ACTIONS": "true",
            "GITHUB_WORKSPACE": str(workspace),
            "GITHUB_SHA": self.sha,
            "GITHUB_REF": event.ref,
            "GITHUB_REF_NAME": event.ref_name,
            "GITHUB_REF_TYPE": "tag" if event.ref.startswith("refs/tags/") else "branch",
            "GITHUB_EVENT_NAME": event.name,
            "GITHUB_REPOSITORY": self.repository,
            "GITHUB_REPOSITORY_OWNER": self.repository.split("/")[0],
            "GITHUB_ACTOR": "rehearsal-bot",
            "GITHUB_RUN_ID": "1",
            "GITHUB_JOB": job_id,
            "GITHUB_OUTPUT": str(files["output"]),
            "GITHUB_ENV": str(files["env"]),
            "GITHUB_PATH": str(files["path"]),
            "GITHUB_STEP_SUMMARY": str(files["summary"]),
            "RUNNER_TEMP": str(temp),
            "RUNNER_OS": "Linux",
            "RUNNER_ARCH": "X64",
            "RUNNER_TOOL_CACHE": str(self.toolcache),
            "RUNNER_ENVIRONMENT": "github-hosted" if hosted else "self-hosted",
            "GH_STANDIN_STATE": str(self.gh_state),
            "DOCKER_DAEMON_CONFIG": str(self.daemon_config),
            "PIP_CACHE_DIR": str(self.root.parent / "pip-cache"),
        }
        # This machine's engine and testcontainers settings (a runner has its own engine).
        runner_env.update(
            {k: v for k, v in os.environ.items() if k.startswith(("DOCKER_HOST", "TESTCONTAINERS_"))}
        )
        full_env = {**runner_env, **env}
        step_timeout = 60 * int(step["timeout-minutes"]) if "timeout-minutes" in step else timeout
        try:
            if "run" in step:
                outcome, log = self._run(step, full_env, workspace, temp, step_timeout)
            else:
                outcome, log = self._action(step, full_env, workspace, path_prefix, evaluator)
        except ExpressionError as exc:
            raise RehearsalError(f"step {label!r}: {exc}") from exc
        outputs = parse_file_command(files["output"].read_text())
        run = StepRun(
            label,
            outcome,
            outcome,
            outputs,
            log,
            parse_file_command(files["env"].read_text()),
            files["summary"].read_text(),
        )
        for line in files["path"].read_text().splitlines():
            if line.strip():
                path_prefix.append(line.strip())
        return run

    def _run(
        self, step: Mapping[str, Any], env: dict[str, str], workspace: Path, temp: Path, timeout: int
    ) -> tuple[str, str]:
        script = str(step["run"])
        if "${{" in script:
            raise RehearsalError(f"an expression inside run: {script[:80]!r} (pass it through env:)")
        shell = step.get("shell", "bash")
        if shell != "bash":
            raise RehearsalError(f"the rehearsal runs bash steps, not shell: {shell}")
        path = temp / "step.sh"
        path.write_text(script)
        cwd = workspace / step.get("working-directory", ".")
        try:
            done = subprocess.run(
                ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(path)],
                cwd=cwd,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            return (
                "failure",
                f"timed out after {timeout} s (timeout-minutes)\n{exc.stdout or ''}{exc.stderr or ''}",
            )
        return (
            "success" if done.returncode == 0 else "failure"
        ), f"exit {done.returncode}\n{done.stdout}{done.stderr}"

    def _action(
        self,
        step: Mapping[str, Any],
        env: dict[str, str],
        workspace: Path,
        path_prefix: list[str],
        evaluator: Evaluator,
    ) -> tuple[str, str]:
        action = str(step["uses"]).split("@")[0]
        inputs = {k: value_of(v, evaluator) for k, v in step.get("with", {}).items()}
        if action not in KNOWN_ACTIONS:
            raise RehearsalError(f"the rehearsal does not know {action}: teach it what the action does")
        if action == "actions/checkout":
            subprocess.run(
                ["git", "clone", "--quiet", str(self.source), str(workspace)], check=True, capture_output=True
            )
            subprocess.run(["git", "checkout", "--quiet", "--detach", self.sha], cwd=workspace, check=True)
            return "success", f"checked out {self.sha}"
        if action == "actions/setup-python":
            if inputs.get("python-version") != "3.11":
                return "failure", f"the rehearsal has Python 3.11, not {inputs.get('python-version')}"
            path_prefix.append(str(self.python() / "bin"))
            return "success", f"Python 3.11 at {self.python()}"
        if action == "docker/setup-buildx-action":
            done = subprocess.run(
                ["docker", "buildx", "inspect"], capture_output=True, text=True, check=False
            )
            driver = re.search(r"Driver:\s+(\S+)", done.stdout)
            wanted = inputs.get("driver", "docker-container")
            if done.returncode or not driver or driver.group(1) != wanted:
                return "failure", f"buildx: no builder with driver {wanted}\n{done.stdout}{done.stderr}"
            return "success", done.stdout
        if action == "docker/login-action":
            if inputs.get("registry") != self.registry_host:
                return (
                    "failure",
                    f"logs in to {inputs.get('registry')!r}, but images go to {self.registry_host}",
                )
            if not inputs.get("username") or not inputs.get("password"):
                return "failure", "login-action without username or password"
            return "success", f"logged in to {self.registry_host}"
        if action == "actions/upload-artifact":
            return self._upload(inputs, workspace)
        return self._download(inputs, workspace)

    def _upload(self, inputs: dict[str, str], workspace: Path) -> tuple[str, str]:
        name = inputs.get("name", "artifact")
        paths = [workspace / p.strip() for p in inputs["path"].splitlines() if p.strip()]
        files = [
            f
            for p in paths
            for f in ([p] if p.is_file() else sorted(p.rglob("*")) if p.is_dir() else [])
            if f.is_file()
        ]
        if not files:
            mode = inputs.get("if-no-files-found", "warn")
            message = f"No files were found with the provided path: {inputs['path']}. No artifacts uploaded."
            return ("failure" if mode == "error" else "success"), message
        target = self.artifacts / name
        if target.exists():
            if inputs.get("overwrite") != "true":
                return "failure", (
                    f"Failed to CreateArtifact: an artifact named {name} already exists on the workflow run "
                    "(409 Conflict; a re-run or two jobs with one name: overwrite: true or a unique name)"
                )
            shutil.rmtree(target)
        root = (
            paths[0]
            if len(paths) == 1 and paths[0].is_dir()
            else Path(os.path.commonpath([f.parent for f in files]))
        )
        for f in files:
            destination = target / f.relative_to(root)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(f, destination)
        return "success", f"uploaded {len(files)} file(s) as {name}"

    def _download(self, inputs: dict[str, str], workspace: Path) -> tuple[str, str]:
        target = workspace / inputs.get("path", ".")
        if "name" in inputs:
            source = self.artifacts / inputs["name"]
            if not source.is_dir():
                present = sorted(p.name for p in self.artifacts.iterdir())
                return (
                    "failure",
                    f"Unable to download artifact(s): Artifact not found for name: {inputs['name']} "
                    f"(present: {present})",
                )
            shutil.copytree(source, target, dirs_exist_ok=True)
            return "success", f"downloaded {inputs['name']}"
        matching = sorted(
            p for p in self.artifacts.iterdir() if fnmatch.fnmatchcase(p.name, inputs.get("pattern", "*"))
        )
        for source in matching:
            merge = inputs.get("merge-multiple") == "true"
            shutil.copytree(source, target if merge else target / source.name, dirs_exist_ok=True)
        return "success", f"downloaded {[p.name for p in matching]}"
