"""Python dependency locks: every image installs a hash-locked set, checked against requirements.in."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO, Project

from buildtool.config.matrix import load_matrix
from buildtool.locks import deps
from buildtool.plan import make_plan

WORKER = Path("images") / "worker-embed"


def test_every_image_of_the_repository_installs_a_hash_locked_set() -> None:
    matrix = load_matrix(REPO / "matrix.yaml")
    jobs = deps.lock_jobs(make_plan(matrix))
    assert {job.image for job in jobs} == {image.name for image in matrix.images} != set()
    for job in jobs:
        assert deps.lock_problems(job.directory, job.image) == []
        pins = deps.parse_lock(job.lock.read_text())
        assert pins and all(pin.hashes >= 1 for pin in pins)
        names = {pin.name for pin in pins}
        # Nothing the base ships for its torch (torch, its nvidia-* libraries) is installed again;
        # other CUDA packages an image needs (vLLM's cutlass, nvcc for its JIT kernels) are locked.
        text = job.lock.read_text()
        provided = set(
            next(line for line in text.splitlines() if line.startswith("# provided-by-base:")).split()[2:]
        )
        assert "torch" in provided and "nvidia-cudnn-cu13" in provided
        assert not names & provided, names & provided
        template = (job.directory / "Dockerfile.j2").read_text()
        assert "pip_install_locked()" in template and "requirements.txt" not in template


def test_the_worker_lock_holds_its_transitive_dependencies() -> None:
    pins = {p.name: p.version for p in deps.parse_lock((REPO / WORKER / "requirements.lock").read_text())}
    assert pins["sentence-transformers"] == "6.2.0" and pins["runpod"] == "1.12.0"
    assert {"transformers", "tokenizers", "huggingface-hub", "safetensors"} <= set(pins)


def test_an_unlocked_requirements_txt_is_refused(cli, project: Project) -> None:  # type: ignore[no-untyped-def]
    (project.root / WORKER / "requirements.txt").write_text("runpod\n")
    result = cli("check", "--matrix", str(project.matrix))
    assert result.code == 2
    assert f"{project.root / WORKER / 'requirements.txt'}:1:" in result.err
    assert "pins no transitive dependency and no hash" in result.err
    assert "buildtool lock-deps --image worker-embed" in result.err


def test_a_missing_lock_is_refused(cli, project: Project) -> None:  # type: ignore[no-untyped-def]
    (project.root / WORKER / "requirements.lock").unlink()
    result = cli("check", "--matrix", str(project.matrix))
    assert result.code == 2 and "image 'worker-embed' has no requirements.lock" in result.err


def test_a_lock_that_disagrees_with_requirements_in_is_refused(cli, project: Project) -> None:  # type: ignore[no-untyped-def]
    source = project.root / WORKER / "requirements.in"
    source.write_text(source.read_text().replace("runpod==1.12.0", "runpod==1.13.0"))
    line = next(i for i, t in enumerate(source.read_text().splitlines(), 1) if "runpod" in t)
    result = cli("check", "--matrix", str(project.matrix))
    assert result.code == 2
    assert f"{source}:{line}:" in result.err
    assert "wants runpod==1.13.0 but requirements.lock locks 1.12.0" in result.err


def test_a_lock_entry_without_a_hash_is_refused(cli, project: Project) -> None:  # type: ignore[no-untyped-def]
    lock = project.root / WORKER / "requirements.lock"
    lock.write_text(lock.read_text() + "leftpad==1.0\n")
    result = cli("check", "--matrix", str(project.matrix))
    assert result.code == 2 and "leftpad==1.0 has no --hash" in result.err


def test_lock_deps_resolves_with_hashes_and_leaves_out_what_the_base_ships(
    cli,  # type: ignore[no-untyped-def]
    project: Project,
) -> None:
    """The real uv against the package index: a small requirement, on the torch 2.11 bases."""
    (project.root / WORKER / "requirements.in").write_text("six==1.16.0\nfilelock\n")
    result = cli("lock-deps", "--matrix", str(project.matrix), "--image", "worker-embed")
    assert result.code == 0, result.err
    text = (project.root / WORKER / "requirements.lock").read_text()
    pins = {p.name: p for p in deps.parse_lock(text)}
    assert set(pins) == {"six"}  # filelock comes with torch: the base ships it
    assert pins["six"].version == "1.16.0" and pins["six"].hashes >= 1
    assert "Left out, the base ships them: torch 2.11.0" in text
    assert deps.lock_problems(project.root / WORKER, "worker-embed") == []


def test_lock_deps_names_an_unknown_image(cli, project: Project) -> None:  # type: ignore[no-untyped-def]
    result = cli("lock-deps", "--matrix", str(project.matrix), "--image", "worker-embd")
    assert result.code == 2 and "Perhaps you meant 'worker-embed'?" in result.err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a==1.0 \\\n    --hash=sha256:00\n", [("a", "1.0", 1)]),
        (
            "# comment\nb==2 ; python_version < '3.12' \\\n  --hash=sha256:1 \\\n  --hash=sha256:2\n",
            [("b", "2", 2)],
        ),
        ("c>=1\n", []),
    ],
)
def test_parse_lock(text: str, expected: list[tuple[str, str, int]]) -> None:
    assert [(p.name, p.version, p.hashes) for p in deps.parse_lock(text)] == expected


def test_a_package_of_the_base_the_image_needs_at_another_version_is_locked(tmp_path: Path) -> None:
    """torch 2.11.0 takes any cuda-bindings 13.x (the base ships the newest, 13.5.0); cuda-python
    13.4.4 pins cuda-bindings~=13.4.4. Left to the base, the hash-mode install fails (the vLLM
    image did): the lock holds cuda-bindings 13.4.4, and still leaves torch and its libraries out."""
    (tmp_path / deps.INPUT_NAME).write_text("cuda-python==13.4.4\n")
    text = deps.generate(deps.LockJob("probe", tmp_path, "3.11", ("2.11.0",)))
    pins = {pin.name: pin.version for pin in deps.parse_lock(text)}
    assert pins["cuda-python"] == "13.4.4" and pins["cuda-bindings"] == "13.4.4"
    provided = deps.provided_by_base(text)
    assert "cuda-bindings" not in provided and {"torch", "nvidia-cudnn-cu13", "triton"} <= provided
    assert not set(pins) & provided


def test_lock_deps_keeps_the_locked_versions_that_still_fit_unless_asked_to_upgrade(tmp_path: Path) -> None:
    """As pip-compile and uv keep their output file: a rerun with an index that has moved on changes
    nothing that still fits requirements.in; --upgrade takes the newest (six 1.16.0 -> 1.17.0+)."""
    (tmp_path / deps.INPUT_NAME).write_text("six\n")
    job = deps.LockJob("probe", tmp_path, "3.11", ())
    old = (
        "six==1.16.0 \\\n    --hash=sha256:1e61c37477a1626458e36f7b1d82aa5c9b094fa4802892072e49de9c60c4c926\n"
    )
    (tmp_path / deps.LOCK_NAME).write_text(old)
    kept = {p.name: p.version for p in deps.parse_lock(deps.generate(job))}
    assert kept == {"six": "1.16.0"}
    upgraded = {p.name: p.version for p in deps.parse_lock(deps.generate(job, upgrade=True))}
    assert upgraded["six"] != "1.16.0"


def test_a_lock_a_hand_edit_broke_is_written_anew_not_an_error(tmp_path: Path) -> None:
    """Its pins are uv's preferences: a line that is no requirement is left out of them, instead of
    uv refusing the file and lock-deps blaming requirements.in."""
    (tmp_path / deps.INPUT_NAME).write_text("six\n")
    (tmp_path / deps.LOCK_NAME).write_text(
        "this is not ==== a lock\n--frobnicate\nsix==1.16.0 \\\n  --hash=sha256:00\n"
    )
    text = deps.generate(deps.LockJob("probe", tmp_path, "3.11", ()))
    assert {p.name: p.version for p in deps.parse_lock(text)} == {"six": "1.16.0"}


def test_lock_deps_writes_no_lock_when_one_image_cannot_be_locked(cli, project: Project) -> None:  # type: ignore[no-untyped-def]
    """Images lock in name order; worker-embed's fails after pytorch-runtime's and worker-diffusion's
    resolved: none of the three is written, and the error names the package."""
    before = {
        name: (project.root / "images" / name / deps.LOCK_NAME).read_text()
        for name in ("pytorch-runtime", "worker-diffusion")
    }
    (project.root / WORKER / "requirements.in").write_text("no-such-package-runpod-images-test==1.0\n")
    result = cli(
        "lock-deps",
        "--matrix",
        str(project.matrix),
        "--image",
        "pytorch-runtime",
        "--image",
        "worker-diffusion",
        "--image",
        "worker-embed",
    )
    assert result.code != 0 and "no-such-package-runpod-images-test" in result.err
    assert "Traceback" not in result.err
    for name, text in before.items():
        assert (project.root / "images" / name / deps.LOCK_NAME).read_text() == text
