"""Benchmarks of the pipeline, as ratios measured in one run (these machines are noisy).

    nox -s bench            (or: python bench/bench_pipeline.py [--skip-builds])

1. plan + check + render vs `docker buildx bake --print` of the same targets, for the repository's
   matrix and for a synthetic 1,000-variant matrix;
2. a fully cached `buildtool build --rebuild` vs raw `docker buildx bake` of the same bake file and
   target, as the library call and as the command (Python's start and imports included),
   and a re-run of a commit the registry already holds (nothing is built);
3. a rebuild after a one-line change in the worker's handler vs the cold build, with bytes pushed
   vs the image's size;
4. a rebuild from the registry cache alone (after prune and removal of the layer facts) vs the
   cold build, and whether it reproduced the digest;
5. the peer a user would pick instead, in the same run on the same engine: raw `docker buildx build
   --push` of the same rendered context with --cache-from/--cache-to type=registry,mode=max, cold,
   after the same one-line change, and from its registry cache alone.
The floors (FLOORS) are printed as pass/fail lines, and the script exits 1 when one falls short.
Every figure is printed and saved (build/bench.json) as soon as it is measured, also when a later
step fails. --concurrent runs another build loop (the tiny test project, --jobs 2 --rebuild) on the
same engine throughout, as on a shared CI engine.
Builds use the repository's default worker variant, in a temporary git checkout, against a
registry:2 container of their own (the peer another). Steps 3 and 4 run `docker buildx prune -af`,
which empties the whole engine's build cache.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from buildtool import api  # noqa: E402
from buildtool.build.result import BuildResult  # noqa: E402
from buildtool.config.options import Options  # noqa: E402
from buildtool.registry.client import HttpRegistry  # noqa: E402
from buildtool.registry.local import answers  # noqa: E402


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def median_time(action: Callable[[], object], runs: int = 3) -> float:
    return statistics.median(timed(action) for _ in range(runs))


def git(root: Path, *args: str) -> str:
    env = {
        "GIT_AUTHOR_NAME": "bench",
        "GIT_AUTHOR_EMAIL": "bench@example.invalid",
        "GIT_COMMITTER_NAME": "bench",
        "GIT_COMMITTER_EMAIL": "bench@example.invalid",
        "PATH": "/usr/bin:/bin",
    }
    return subprocess.run(
        ["git", "-C", str(root), *args], check=True, capture_output=True, text=True, env=env
    ).stdout.strip()


def checkout(work: Path) -> Path:
    root = work / "checkout"
    root.mkdir()
    shutil.copy(REPO / "matrix.yaml", root / "matrix.yaml")
    for name in ("images", "smoke"):  # the templates, and the suite every image carries
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    (root / ".gitignore").write_text("/build/\n")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "bench")
    return root


def synthetic_matrix(work: Path, images: int = 10, bases: int = 100) -> Path:
    """images x bases = 1,000 variants, all valid, on the repository's templates."""
    root = work / "synthetic"
    shutil.copytree(REPO / "images", root / "images", ignore=shutil.ignore_patterns("__pycache__"))
    doc = yaml.safe_load((REPO / "matrix.yaml").read_text())
    template_base = next(b for b in doc["bases"] if b["name"] == "runpod-torch211-cu130")
    doc["bases"] += [{**template_base, "name": f"synthetic-{i:03d}"} for i in range(bases)]
    runtime = next(i for i in doc["images"] if i["name"] == "pytorch-runtime")
    doc["images"] += [{**runtime, "name": f"synthetic-image-{i:02d}"} for i in range(images)]
    doc["matrix"] = {
        "image": [f"synthetic-image-{i:02d}" for i in range(images)],
        "base": [f"synthetic-{i:03d}" for i in range(bases)],
        "gpus": "all",
    }
    doc.pop("default_variant", None)
    (root / "matrix.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    shutil.copytree(REPO / "smoke", root / "smoke", ignore=shutil.ignore_patterns("__pycache__"))
    (root / ".gitignore").write_text("/build/\n")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "synthetic")  # a clean revision: contexts read from the commit
    return root / "matrix.yaml"


def render_vs_bake_print(matrix: Path) -> dict[str, float]:
    options = Options.for_matrix(matrix, registry="localhost:5000")  # HEAD of the matrix's checkout
    render_seconds = median_time(lambda: api.render(options))
    build_dir = matrix.parent / "build"
    targets = len(json.loads((build_dir / "docker-bake.json").read_text())["target"])
    bake_seconds = median_time(
        lambda: subprocess.run(
            ["docker", "buildx", "bake", "--print", "-f", "docker-bake.json"],
            cwd=build_dir,
            check=True,
            capture_output=True,
        )
    )
    return {
        "variants": targets,
        "buildtool_render_s": render_seconds,
        "bake_print_s": bake_seconds,
        "ratio": render_seconds / bake_seconds,
    }


def startup() -> dict[str, float]:
    """`buildtool --help` against a bare interpreter start, median of 5 each: what a command costs
    before it does anything (the stages are imported only by the commands that run them)."""

    def command(*args: str) -> Callable[[], object]:
        return lambda: subprocess.run([sys.executable, *args], check=True, capture_output=True, cwd=REPO)

    bare = median_time(command("-c", "pass"), runs=5)
    helped = median_time(command("-m", "buildtool", "--help"), runs=5)
    plan = median_time(command("-m", "buildtool", "plan", "--json"), runs=5)
    return {
        "python_s": bare,
        "buildtool_help_s": helped,
        "buildtool_plan_json_s": plan,
        "help_ratio": helped / bare,
    }


def start_registry() -> tuple[str, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    container = subprocess.run(
        [
            "docker",
            "run",
            "-d",
            "--rm",
            "-p",
            f"127.0.0.1:{port}:5000",
            "--label",
            "org.runpod-images.bench=1",
            "registry:2",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    address = f"localhost:{port}"
    deadline = time.monotonic() + 30
    while not answers(address) and time.monotonic() < deadline:
        time.sleep(0.2)
    return container, address


def layer_digests(registry: HttpRegistry, ref: str) -> dict[str, int]:
    manifest = registry.manifest(ref)
    assert manifest is not None
    doc: dict[str, Any] = manifest.document
    blobs = {layer["digest"]: int(layer["size"]) for layer in doc["layers"]}
    blobs[doc["config"]["digest"]] = int(doc["config"]["size"])
    return blobs


@dataclass(frozen=True)
class Floor:
    """A ratio the pipeline must stay at or under, measured in one run."""

    name: str
    what: str
    section: str  # of the results
    ratio: str  # the figure of that section that holds the ratio
    limit: float


FLOORS = (
    Floor("render", "plan + check + render of 1,000 variants vs bake --print", "render_1000", "ratio", 0.5),
    Floor("one-line change", "a one-line change vs the peer's", "builds", "one_line_change_vs_peer", 2.0),
    Floor(
        "cache only",
        "a rebuild from the registry cache alone, its share of the cold build vs the peer's share",
        "builds",
        "registry_cache_only_share_vs_peer",
        1.2,
    ),
    Floor("cold", "a cold build and push vs the peer's", "builds", "cold_vs_peer", 1.3),
)


def verdicts(results: dict[str, Any]) -> list[tuple[Floor, float | None]]:
    """Each floor with its measured ratio (None: not measured in this run, as with --skip-builds)."""
    out: list[tuple[Floor, float | None]] = []
    for floor in FLOORS:
        value = results.get(floor.section, {}).get(floor.ratio)
        out.append((floor, float(value) if isinstance(value, int | float) else None))
    return out


def print_verdicts(results: dict[str, Any]) -> bool:
    """The pass/fail lines; whether every measured floor holds."""
    print("\nfloors")
    held = True
    for floor, value in verdicts(results):
        if value is None:
            print(f"  skip  {floor.name:16} <= {floor.limit:.2f}x  not measured in this run")
            continue
        ok = value <= floor.limit
        held &= ok
        verdict = "pass" if ok else "FAIL"
        print(f"  {verdict}  {floor.name:16} {value:.2f}x <= {floor.limit:.2f}x  {floor.what}")
    return held


class StepFailed(Exception):
    """A benchmark step failed; the figures measured before it are kept."""


class Peer:
    """What a user would run instead of buildtool: `docker buildx build --push` of the same rendered
    context, with the registry cache (mode=max) in a repository of its own, on the same engine."""

    def __init__(self, address: str, context: Path) -> None:
        self.image = f"{address}/peer-worker"
        self.cache = f"{self.image}:buildcache"
        self.context = context

    def build(self, tag: str) -> float:
        command = ["docker", "buildx", "build", "--push", "--provenance=false", "-t", f"{self.image}:{tag}"]
        command += ["--cache-from", f"type=registry,ref={self.cache}"]
        command += ["--cache-to", f"type=registry,ref={self.cache},mode=max", str(self.context)]
        return timed(lambda: subprocess.run(command, check=True, capture_output=True))


def remove_images(address: str) -> None:
    """The docker driver also keeps each image it pushes in the engine's image store (GBs each):
    the bench's own and the peer's go with their registries."""
    listed = subprocess.run(
        ["docker", "images", "--filter", f"reference={address}/*", "--format", "{{.Repository}}:{{.Tag}}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    if listed:
        subprocess.run(["docker", "image", "rm", "-f", *listed], capture_output=True, check=False)


def prune_build_cache() -> None:
    subprocess.run(["docker", "buildx", "prune", "-af"], check=True, capture_output=True)


def builds(root: Path, address: str, figures: dict[str, Any]) -> None:
    """Fills `figures` as it goes, so that a failing later step loses none of the earlier ones."""
    # The peer pushes to a registry of its own: in the same one, BuildKit would mount the base's
    # GBs from buildtool's repository instead of uploading them, and its cold push would cost nothing.
    peer_container, peer_address = start_registry()
    try:
        _builds(root, address, peer_address, figures)
    finally:
        subprocess.run(["docker", "rm", "-f", peer_container], capture_output=True, check=False)
        remove_images(peer_address)


def _builds(root: Path, address: str, peer_address: str, figures: dict[str, Any]) -> None:
    matrix = root / "matrix.yaml"
    default = yaml.safe_load(matrix.read_text())["default_variant"]
    registry = HttpRegistry()
    figures["variant"] = default

    def run(rebuild: bool = False) -> BuildResult:
        options = Options.for_matrix(
            matrix, select=(default,), registry=address, jobs=1, rebuild=rebuild, cache_dir=layer_cache
        )
        result = api.build(options)
        if not result.ok:
            raise StepFailed(f"build failed: {[v.error for v in result.variants]}")
        return result

    layer_cache = root / "build" / "layer-cache"  # this run's own: a cold build measures the layers

    def forget_everything() -> None:
        """No build cache, no layer facts: only the registry (and its cache)."""
        prune_build_cache()
        shutil.rmtree(layer_cache, ignore_errors=True)

    # Cold: no local build cache and an empty registry (so no registry cache either).
    forget_everything()
    start = time.perf_counter()
    cold = run()
    cold_seconds = time.perf_counter() - start
    entry = cold.variants[0]
    size = entry.compressed_size or 0
    figures.update(
        image_compressed_bytes=size,
        cold_build_s=cold_seconds,
        cold_cached_steps=f"{entry.cached_steps}/{entry.steps}",
    )

    # The peer from nothing too: no build cache, an empty repository (so no registry cache).
    peer = Peer(peer_address, root / "build" / default)
    prune_build_cache()
    peer_cold = peer.build("cold")
    figures.update(peer_cold_build_s=peer_cold, cold_vs_peer=cold_seconds / peer_cold)

    # A re-run of the same commit: the registry holds its tag, nothing is built.
    rerun_seconds = median_time(run)
    figures["rerun_built_commit_s"] = rerun_seconds

    # Fully cached: buildtool build --rebuild (same commit: nothing to push) vs raw bake of the same
    # bake file and target, as the library call and as the command (Python's start included).
    bake = ["docker", "buildx", "bake", "-f", "docker-bake.json", default]
    command = [
        sys.executable,
        "-m",
        "buildtool",
        "build",
        "--select",
        default,
        "--registry",
        address,
        "--jobs",
        "1",
        "--rebuild",
    ]
    build_dir = root / "build"
    cached_tool: list[float] = []
    cached_command: list[float] = []
    cached_bake: list[float] = []
    for _ in range(3):  # alternate, so that drift hits all alike
        cached_tool.append(timed(lambda: run(rebuild=True)))
        cached_command.append(
            timed(lambda: subprocess.run(command, cwd=root, check=True, capture_output=True))
        )
        cached_bake.append(
            timed(lambda: subprocess.run(bake, cwd=build_dir, check=True, capture_output=True))
        )
    figures.update(
        fully_cached_buildtool_s=statistics.median(cached_tool),
        fully_cached_buildtool_command_s=statistics.median(cached_command),
        fully_cached_raw_bake_s=statistics.median(cached_bake),
        fully_cached_ratio=statistics.median(cached_tool) / statistics.median(cached_bake),
        fully_cached_command_ratio=statistics.median(cached_command) / statistics.median(cached_bake),
        rerun_built_commit_vs_raw_bake=rerun_seconds / statistics.median(cached_bake),
    )

    # One-line change in the worker's handler, committed: only the last layer rebuilds and pushes.
    before = layer_digests(registry, entry.immutable_tag)
    handler = root / "images" / "worker-embed" / "app" / "handler.py"
    handler.write_text(handler.read_text().replace('"device": DEVICE}', '"device": DEVICE, "version": 2}'))
    git(root, "commit", "-qam", "one-line change")
    start = time.perf_counter()
    changed = run()
    changed_seconds = time.perf_counter() - start
    after = layer_digests(registry, changed.variants[0].immutable_tag)
    pushed = sum(size for digest, size in after.items() if digest not in before)
    figures.update(
        one_line_change_s=changed_seconds,
        one_line_change_vs_cold=changed_seconds / cold_seconds,
        one_line_change_rebuilt_steps=changed.variants[0].steps - changed.variants[0].cached_steps,
        one_line_change_pushed_bytes=pushed,
        one_line_change_pushed_vs_size=pushed / size if size else None,
    )
    peer_changed = peer.build("changed")  # the context buildtool rendered for the change
    figures.update(
        peer_one_line_change_s=peer_changed, one_line_change_vs_peer=changed_seconds / peer_changed
    )

    # The same commit again from the registry cache alone: no local build cache, no layout.
    forget_everything()
    start = time.perf_counter()
    from_cache = run(rebuild=True)
    from_cache_seconds = time.perf_counter() - start
    rebuilt = from_cache.variants[0]
    figures.update(
        registry_cache_only_s=from_cache_seconds,
        registry_cache_only_vs_cold=from_cache_seconds / cold_seconds,
        registry_cache_only_cached_steps=f"{rebuilt.cached_steps}/{rebuilt.steps}",
        registry_cache_only_same_digest=rebuilt.digest == changed.variants[0].digest,
    )
    prune_build_cache()
    peer_cache_only = peer.build("cache-only")
    peer_share = peer_cache_only / peer_cold
    figures.update(
        peer_registry_cache_only_s=peer_cache_only,
        peer_registry_cache_only_vs_cold=peer_share,
        registry_cache_only_share_vs_peer=(from_cache_seconds / cold_seconds) / peer_share,
    )


class ConcurrentBuilds:
    """Another build on the same engine for the whole benchmark, as on a shared CI engine: the
    tiny test project, built with --jobs 2 --rebuild in a loop (a rebuild that gave another digest
    is refused, so a failed round counts). The bench's own digests must not depend on it."""

    def __init__(self, work: Path, address: str) -> None:
        self.root = work / "concurrent"
        shutil.copytree(REPO / "tests" / "projects" / "tiny", self.root)
        shutil.copytree(REPO / "images" / "_shared", self.root / "images" / "_shared")
        (self.root / ".gitignore").write_text("/build/\n")
        git(self.root, "init", "-q")
        git(self.root, "add", "-A")
        git(self.root, "commit", "-qm", "concurrent")
        self.address = address
        self.stop = threading.Event()
        self.rounds = 0
        self.digests: set[str] = set()
        self.failures: list[list[str]] = []
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        command = [sys.executable, "-m", "buildtool", "build", "--registry", self.address]
        command += ["--jobs", "2", "--rebuild"]
        while not self.stop.is_set():
            done = subprocess.run(command, cwd=self.root, capture_output=True, text=True, check=False)
            manifest = self.root / "build" / "manifest.json"
            if done.returncode == 0 and manifest.is_file():
                self.digests |= {v["digest"] for v in json.loads(manifest.read_text())["variants"].values()}
            else:
                self.failures.append((done.stdout + done.stderr).strip().splitlines()[-1:])
            self.rounds += 1

    def __enter__(self) -> ConcurrentBuilds:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def report(results: dict[str, Any], output: Path) -> None:
    for section, figures in results.items():
        print(f"\n{section}")
        for key, value in figures.items():
            print(f"  {key:36} {value:.3f}" if isinstance(value, float) else f"  {key:36} {value}")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {output}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--skip-builds", action="store_true", help="only the render benchmarks")
    parser.add_argument(
        "--concurrent",
        action="store_true",
        help="run another build loop on the same engine throughout (digests must not change)",
    )
    parser.add_argument("--output", type=Path, default=REPO / "build" / "bench.json")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    failure: str | None = None
    with tempfile.TemporaryDirectory(prefix="bench-") as temporary:
        work = Path(temporary)
        try:
            root = checkout(work)
            results["startup"] = startup()
            results["render_repository"] = render_vs_bake_print(root / "matrix.yaml")
            results["render_1000"] = render_vs_bake_print(synthetic_matrix(work))
            if not args.skip_builds:
                container, address = start_registry()
                figures: dict[str, Any] = {}
                results["builds"] = figures
                try:
                    if args.concurrent:
                        with ConcurrentBuilds(work, address) as other:
                            builds(root, address, figures)
                        figures["concurrent_rounds"] = other.rounds
                        figures["concurrent_distinct_digests"] = len(other.digests)
                        figures["concurrent_failed_rounds"] = len(other.failures)
                        figures["concurrent_failures"] = other.failures[:3]
                    else:
                        builds(root, address, figures)
                finally:
                    subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=False)
                    remove_images(address)
        except (StepFailed, subprocess.CalledProcessError) as exc:
            failure = str(exc)
            results["failed"] = {"error": failure}
        finally:
            report(results, args.output)  # every figure measured, also when a later step failed
    held = print_verdicts(results)
    if failure:
        print(f"\nbench failed: {failure}", file=sys.stderr)
        return 1
    if not held:
        print("\nbench: a floor falls short (FAIL above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
