"""The package's shape: the pipeline's stages import only the stages before them (the one-way flow
of README.md's table), and no module grows past 600 lines (split by concern, not by size)."""

from __future__ import annotations

import ast

from conftest import REPO

LIMIT = 600

# Lower layers first; a module may import its own layer and those below. `cli`, `api` and the
# docs generator sit on top and may import anything.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "files", "refs", "arch", "facts", "context_files", "naming"),
    ("config",),
    ("plan", "registry", "locks.deps", "locks.hub", "locks"),
    ("policy",),
    ("render", "build_dir"),
    ("build",),
    ("smoke_runner", "report"),
    ("release",),
    ("deploy",),
    # The generators: the JSON Schema holds the rules' options beside the keys.
    ("config.schema", "locks.commands", "api", "reference", "cli", "__init__", "__main__"),
)


def unit(module: str) -> str:
    """The most specific LAYERS entry a module (dotted, under buildtool) belongs to."""
    matches = [e for layer in LAYERS for e in layer if module == e or module.startswith(e + ".")]
    assert matches, f"buildtool.{module} is in no layer of tests/test_layout.py: place it"
    return max(matches, key=len)


def layer_of(module: str) -> int:
    entry = unit(module)
    return next(i for i, layer in enumerate(LAYERS) if entry in layer)


def buildtool_modules() -> dict[str, ast.Module]:
    root = REPO / "buildtool"
    out = {}
    for path in root.rglob("*.py"):
        name = path.relative_to(root).with_suffix("").as_posix().replace("/", ".").removesuffix(".__init__")
        out[name] = ast.parse(path.read_text())
    return out


def imported(tree: ast.Module, modules: set[str]) -> set[str]:
    """The buildtool modules `tree` imports: `from buildtool.a import b` is a.b when that is a
    module, else a."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "buildtool":
            base = node.module.removeprefix("buildtool").removeprefix(".")
            for alias in node.names:
                inner = f"{base}.{alias.name}".strip(".")
                names.add(inner if inner in modules else base)
        elif isinstance(node, ast.Import):
            names |= {
                a.name.removeprefix("buildtool.") for a in node.names if a.name.startswith("buildtool.")
            }
    return names - {""}


def test_every_stage_imports_only_the_stages_before_it() -> None:
    modules = buildtool_modules()
    wrong = [
        f"buildtool.{name} imports buildtool.{target}, a later stage"
        for name, tree in modules.items()
        for target in imported(tree, set(modules))
        if layer_of(target) > layer_of(name)
    ]
    assert wrong == []


def test_the_layer_check_sees_a_backward_import() -> None:
    tree = ast.parse("from buildtool.build.engine import BuildxEngine\nfrom buildtool import api\n")
    assert imported(tree, set(buildtool_modules())) == {"build.engine", "api"}
    assert layer_of("policy.image") < layer_of("build.oci")


def test_no_module_is_over_the_line_limit() -> None:
    for package in ("buildtool", "smoke"):
        for path in (REPO / package).rglob("*.py"):
            lines = len(path.read_text().splitlines())
            assert lines <= LIMIT, (
                f"{path.relative_to(REPO)} has {lines} lines (limit {LIMIT}): split it by concern"
            )
