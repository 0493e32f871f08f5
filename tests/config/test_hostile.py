"""Hostile but plausible input: each gets one clear error (what, where, the fix), exit 2."""

from __future__ import annotations

import pytest
from conftest import Project, git

from buildtool.naming import REGISTRY_PATTERN
from buildtool.policy import check_handler


@pytest.mark.parametrize(
    ("registry", "says"),
    [
        ("https://ghcr.io/org", "has a scheme"),
        ("GHCR.IO/org", "has upper case in its host"),
        ("ghcr.io/MyOrg", "has upper case in its path"),
        ("ghcr.io/org:v1", "has a tag or a digest"),
        ("ghcr.io/org@sha256:" + "0" * 64, "has a tag or a digest"),
        ("ghcr.io /org", "has spaces"),
        (" ghcr.io/org", "has spaces"),
        ("ghcr.io/-org", "has no registry form"),
    ],
)
def test_a_registry_that_cannot_prefix_an_image_is_refused_up_front(
    cli,  # type: ignore[no-untyped-def]
    project: Project,
    registry: str,
    says: str,
) -> None:
    result = cli(
        "render", "--matrix", str(project.matrix), "--registry", registry, "--commit", project.commit
    )
    assert result.code == 2, result.out
    assert f"--registry '{registry}' {says}" in result.err and "fix:" in result.err
    assert not (project.root / "build").exists()  # nothing written


def test_a_bad_registry_in_the_matrix_names_its_line(cli, project: Project) -> None:  # type: ignore[no-untyped-def]
    project.edit("default_variant:", "registry: https://ghcr.io/org\ndefault_variant:")
    result = cli("check", "--matrix", str(project.matrix))
    assert result.code == 2
    assert f"{project.matrix}:{project.line_of('registry: https')}:" in result.err
    assert "has a scheme" in result.err and "write ghcr.io/org" in result.err


def test_an_empty_registry_variable_counts_as_unset(
    cli,  # type: ignore[no-untyped-def]
    project: Project,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REGISTRY", "")
    result = cli("render", "--matrix", str(project.matrix), "--commit", project.commit)
    assert result.code == 0, result.err
    assert "localhost:5000/worker-embed:" in result.out


@pytest.mark.parametrize(
    "value", ["ghcr.io/org", "localhost:5000", "registry.example.com:8443/a/b-c", "[::1]:5000"]
)
def test_registries_users_write_are_accepted(value: str) -> None:
    assert REGISTRY_PATTERN.fullmatch(value)


def test_a_short_commit_is_expanded_to_the_full_sha_or_refused(cli, tiny: Project) -> None:  # type: ignore[no-untyped-def]
    full = git(tiny.root, "rev-parse", "HEAD")
    result = cli("render", "--matrix", str(tiny.matrix), "--commit", full[:8], "--registry", "localhost:5000")
    assert result.code == 0, result.err
    assert f"tiny:slim-{full}" in result.out  # the tag names the full sha
    result = cli("render", "--matrix", str(tiny.matrix), "--commit", "deadbeef1")  # not in this checkout
    assert result.code == 2
    assert "'deadbeef1' is not a commit of this repository" in result.err and "git fetch" in result.err


@pytest.mark.parametrize("select", ["", " ", "worker-*,", ",,"])
def test_an_empty_select_pattern_is_refused_not_read_as_everything(
    cli,  # type: ignore[no-untyped-def]
    project: Project,
    select: str,
) -> None:
    result = cli("plan", "--matrix", str(project.matrix), "--select", select)
    assert result.code == 2
    assert "has an empty pattern" in result.err and "leave --select out" in result.err


# --- YAML: aliases, merge keys, line numbers ---------------------------------------------------

ALIAS_BOMB = """\
a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
version: 1
"""


def test_an_alias_bomb_is_refused_at_once(cli, project: Project) -> None:  # type: ignore[no-untyped-def]
    import time

    project.matrix.write_text(ALIAS_BOMB + project.matrix.read_text().replace("version: 1\n", "", 1))
    started = time.monotonic()
    result = cli("check", "--matrix", str(project.matrix))
    elapsed = time.monotonic() - started
    assert result.code == 2 and "expands to more than" in result.err and "alias bomb" in result.err
    assert f"{project.matrix}:1:" not in result.err  # the entry whose aliases blew up, not the root
    assert elapsed < 1.0, f"took {elapsed:.2f} s"
    assert "Traceback" not in result.err


def test_a_recursive_alias_is_one_clear_error(cli, project: Project) -> None:  # type: ignore[no-untyped-def]
    project.edit("policy:\n", "loop: &loop [1, *loop]\npolicy:\n")
    result = cli("check", "--matrix", str(project.matrix))
    assert result.code == 2
    assert f"{project.matrix}:{project.line_of('loop: &loop')}:" in result.err
    assert "recursive alias" in result.err and "Traceback" not in result.err


def test_merge_keys_work_and_explicit_keys_win(cli, project: Project) -> None:  # type: ignore[no-untyped-def]
    project.edit(
        "  - {name: A40, runpod_id: NVIDIA A40, arch: sm_86, flash_attention: 2}\n",
        "  - &ampere {name: A40, runpod_id: NVIDIA A40, arch: sm_86, flash_attention: 2}\n"
        "  - {<<: *ampere, name: A6000, runpod_id: NVIDIA RTX A6000}\n",
    )
    result = cli("plan", "--matrix", str(project.matrix), "--json")
    assert result.code == 0, result.err
    assert "A6000" in result.out
    from buildtool.config.matrix import load_matrix

    a6000 = load_matrix(project.matrix).gpu("A6000")
    assert (a6000.arch, a6000.runpod_id, a6000.flash_attention) == ("sm_86", "NVIDIA RTX A6000", 2)


def test_a_merge_of_something_not_a_mapping_is_one_clear_error(cli, project: Project) -> None:  # type: ignore[no-untyped-def]
    project.edit("policy:\n", "policy:\n  <<: [1, 2]\n")
    result = cli("check", "--matrix", str(project.matrix))
    assert result.code == 2 and "a merge key (<<) takes a mapping" in result.err


def test_an_unknown_key_points_at_its_own_line(cli, project: Project) -> None:  # type: ignore[no-untyped-def]
    """A key whose value is a block on the next lines: the error names the key's line."""
    project.edit("policy:\n", "policy:\n  refused_gpus:\n    - B200\n")
    result = cli("check", "--matrix", str(project.matrix))
    assert result.code == 2
    assert f"{project.matrix}:{project.line_of('refused_gpus:')}: unknown key 'refused_gpus'" in result.err


# --- immutable tags hold exactly the commit ----------------------------------------------------


def test_an_untracked_file_in_a_template_makes_the_tree_dirty(cli, tiny: Project) -> None:  # type: ignore[no-untyped-def]
    (tiny.root / "images" / "tiny" / "notes.txt").write_text("not committed\n")
    result = cli("build", "--matrix", str(tiny.matrix), "--registry", "localhost:1")
    assert result.code == 2
    assert "files not in the commit would reach a build context: images/tiny/notes.txt" in result.err
    assert "--allow-dirty" in result.err


def test_an_ignored_file_in_the_smoke_suite_makes_the_tree_dirty(cli, tiny: Project) -> None:  # type: ignore[no-untyped-def]
    (tiny.root / ".gitignore").write_text("/build/\n*.local\n")
    git(tiny.root, "commit", "-qam", "ignore *.local")
    (tiny.root / "smoke" / "settings.local").write_text("token=not-for-images\n")
    result = cli("build", "--matrix", str(tiny.matrix), "--registry", "localhost:1")
    assert result.code == 2 and "smoke/settings.local" in result.err


def test_caches_render_skips_do_not_make_the_tree_dirty(cli, tiny: Project) -> None:  # type: ignore[no-untyped-def]
    cache = tiny.root / "images" / "tiny" / "__pycache__"
    cache.mkdir()
    (cache / "app.cpython-311.pyc").write_bytes(b"\0")
    result = cli("build", "--matrix", str(tiny.matrix), "--registry", "localhost:1")
    assert result.code == 1  # it got as far as the (unreachable) registry: not refused as dirty
    assert "is unreachable" in result.err and "not in the commit" not in result.err


# --- image references: every spelling of a refused repository, every image a Dockerfile pulls ---

CUDA_TAG = "13.0.0-devel-ubuntu22.04"


@pytest.mark.parametrize(
    "ref",
    [
        f"nvidia/cuda:{CUDA_TAG}",
        f"docker.io/nvidia/cuda:{CUDA_TAG}",
        f"index.docker.io/nvidia/cuda:{CUDA_TAG}",
        f"registry-1.docker.io/nvidia/cuda:{CUDA_TAG}",
        f"nvidia/cuda@sha256:{'a' * 64}",
        f"nvcr.io/nvidia/cuda:{CUDA_TAG}",  # a mirror the policy names
    ],
)
def test_every_spelling_of_a_refused_base_is_refused(cli, project: Project, ref: str) -> None:  # type: ignore[no-untyped-def]
    project.edit("ref: runpod/pytorch:2.11.0-cuda13.0-cudnn9-devel", f"ref: {ref}")
    result = cli("check", "--matrix", str(project.matrix))
    assert result.code == 2
    assert f"{project.matrix}:{project.line_of(ref)}:" in result.err
    assert "not cached by RunPod" in result.err


def test_upper_case_in_a_reference_is_one_clear_error(cli, project: Project) -> None:  # type: ignore[no-untyped-def]
    project.edit("ref: runpod/pytorch:2.11.0-cuda13.0-cudnn9-devel", "ref: NVIDIA/cuda:13.0.0")
    result = cli("check", "--matrix", str(project.matrix))
    assert result.code == 2
    assert f"{project.matrix}:{project.line_of('NVIDIA/cuda')}:" in result.err
    assert "registry hosts are written in lower case ('nvidia')" in result.err


def _runtime_template(project: Project, replace: str, by: str) -> None:
    template = project.root / "images" / "pytorch-runtime" / "Dockerfile.j2"
    text = template.read_text()
    assert replace in text
    template.write_text(text.replace(replace, by, 1))


@pytest.mark.parametrize(
    ("insert", "pulls"),
    [
        # A stage named like the image: its own FROM pulls the image (the name is not a stage yet).
        (f"FROM nvidia/cuda:{CUDA_TAG} AS nvidia/cuda:{CUDA_TAG}\n", "FROM nvidia/cuda"),
        (f"COPY --from=nvidia/cuda:{CUDA_TAG} /usr/local/cuda /opt/cuda\n", "COPY --from nvidia/cuda"),
        (f"COPY --from=nvcr.io/nvidia/cuda:{CUDA_TAG} /usr/local/cuda /opt/cuda\n", "COPY --from nvcr.io"),
        (
            f"RUN --mount=type=bind,from=index.docker.io/nvidia/cuda:{CUDA_TAG},target=/c true\n",
            "RUN --mount from= index.docker.io/nvidia/cuda",
        ),
    ],
)
def test_every_image_a_dockerfile_pulls_passes_the_refusals(
    cli,  # type: ignore[no-untyped-def]
    project: Project,
    insert: str,
    pulls: str,
) -> None:
    anchor = "WORKDIR /opt/runtime\n"
    _runtime_template(project, anchor, (insert if insert.startswith(("COPY", "RUN")) else "") + anchor)
    if insert.startswith("FROM"):
        _runtime_template(project, "FROM ${BASE_IMAGE}\n", insert + "FROM ${BASE_IMAGE}\n")
    result = cli("check", "--matrix", str(project.matrix))
    assert result.code == 2, result.out
    assert pulls in result.err and "not cached by RunPod" in result.err
    assert "Dockerfile:" in result.err  # file and line of the rendered Dockerfile


def test_an_image_outside_the_catalogue_in_copy_from_is_refused(cli, project: Project) -> None:  # type: ignore[no-untyped-def]
    _runtime_template(
        project, "WORKDIR /opt/runtime\n", "COPY --from=python:3.12 /x /x\nWORKDIR /opt/runtime\n"
    )
    result = cli("check", "--matrix", str(project.matrix))
    assert result.code == 2
    assert "COPY --from python:3.12 pulls docker.io/library/python:3.12, which is not a base" in result.err


def test_earlier_stages_by_name_or_index_are_not_images(cli, project: Project) -> None:  # type: ignore[no-untyped-def]
    _runtime_template(
        project,
        "WORKDIR /opt/runtime\n",
        "COPY --from=KERNELS-LOCAL / /k/\nCOPY --from=0 / /zero/\nWORKDIR /opt/runtime\n",
    )
    # The variants that bake kernels have the kernels-local stage (torch 2.4 is offered none).
    result = cli("check", "--matrix", str(project.matrix), "--select", "pytorch-runtime-*cu130*")
    assert result.code == 0, result.err


# --- GPU architectures: capability plus suffix --------------------------------------------------

B200 = "  - {name: B200, runpod_id: NVIDIA B200, arch: sm_100}"


def _refusals(cli, project: Project) -> dict[str, set[str]]:  # type: ignore[no-untyped-def]
    """GPU -> the reasons it is refused for, over every variant; a refused GPU is never a target."""
    import json

    result = cli("plan", "--matrix", str(project.matrix), "--json")
    assert result.code == 0, result.err
    out: dict[str, set[str]] = {}
    for entry in json.loads(result.out)["include"]:
        refused = {r["gpu"]: r["reason"] for r in entry["refused_gpus"]}
        assert not set(entry["gpus"]) & set(refused)
        for gpu, reason in refused.items():
            out.setdefault(gpu, set()).add(reason)
    return out


def _policy_refuses(cli, project: Project, gpu: str) -> bool:  # type: ignore[no-untyped-def]
    return any("Blackwell" in reason for reason in _refusals(cli, project).get(gpu, ()))


@pytest.mark.parametrize(
    "arch", ["sm_100", "sm_100a", "sm_100f", "sm_103", "sm_103a", "sm_103f", "compute_100", "10.0", "10.3f"]
)
def test_a_refused_generation_covers_every_spelling_and_suffix(cli, project: Project, arch: str) -> None:  # type: ignore[no-untyped-def]
    project.edit(B200, f"  - {{name: B200, runpod_id: NVIDIA B200, arch: '{arch}'}}")
    assert _policy_refuses(cli, project, "B200")


@pytest.mark.parametrize(("arch", "refused"), [("sm_100a", True), ("sm_100f", True), ("sm_103", False)])
def test_a_refused_capability_covers_its_suffixes_only(  # type: ignore[no-untyped-def]
    cli, project: Project, arch: str, refused: bool
) -> None:
    project.edit("    - arch: 10.x", "    - arch: sm_100")
    project.edit(B200, f"  - {{name: B200, runpod_id: NVIDIA B200, arch: {arch}}}")
    assert _policy_refuses(cli, project, "B200") is refused


def test_an_explicit_target_of_a_refused_arch_is_an_error(cli, project: Project) -> None:  # type: ignore[no-untyped-def]
    project.edit(B200, "  - {name: B200, runpod_id: NVIDIA B200, arch: sm_100f}")
    project.edit("  gpus: all", "  gpus: [H100, B200]")
    result = cli("check", "--matrix", str(project.matrix))
    assert result.code == 2 and "targets B200 (sm_100f)" in result.err and "Blackwell" in result.err


def test_suffixed_targets_reach_torch_cuda_arch_list_in_torch_notation(cli, project: Project) -> None:  # type: ignore[no-untyped-def]
    project.edit(
        "  - {name: H200, runpod_id: NVIDIA H200, arch: sm_90, flash_attention: 3}",
        "  - {name: H200, runpod_id: NVIDIA H200, arch: sm_90a, flash_attention: 3}",
    )
    result = cli("render", "--matrix", str(project.matrix), "--commit", project.commit)
    assert result.code == 0, result.err
    dockerfile = (project.root / "build" / "worker-embed-runpod-torch211-cu130" / "Dockerfile").read_text()
    assert 'TORCH_CUDA_ARCH_LIST="8.0;8.6;8.9;9.0;9.0a"' in dockerfile


@pytest.mark.parametrize("arch", ["sm_9", "sm_90b", "SM_90", "9", "9.0.1", "sm100", "ampere", "sm_090"])
def test_what_is_not_an_arch_is_one_clear_error(cli, project: Project, arch: str) -> None:  # type: ignore[no-untyped-def]
    project.edit(B200, f"  - {{name: B200, runpod_id: NVIDIA B200, arch: '{arch}'}}")
    result = cli("check", "--matrix", str(project.matrix))
    assert result.code == 2
    assert f"{project.matrix}:{project.line_of('name: B200')}:" in result.err
    assert "is not a GPU architecture" in result.err and "Traceback" not in result.err


# --- handlers: every path to a load, resolved as Python resolves names -------------------------

LOADERS = ("SentenceTransformer", "from_pretrained", "load_model", "torch.load", "LLM", "from_engine_args")
START = 'runpod.serverless.start({"handler": handler})\n'


def _worker(tmp_path, files: dict[str, str]) -> list[str]:  # type: ignore[no-untyped-def]
    import textwrap

    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return [f.problem.render() for f in check_handler(tmp_path / "handler.py", LOADERS)]


def test_a_load_through_a_helper_in_another_module_imported_as_another_name(tmp_path) -> None:  # type: ignore[no-untyped-def]
    problems = _worker(
        tmp_path,
        {
            "helpers.py": "from sentence_transformers import SentenceTransformer as ST\n"
            "def get():\n    return ST('m')\n",
            "handler.py": "import runpod\nfrom helpers import get as fetch\nMODEL = fetch()\n"
            "def handler(job):\n    return fetch().encode(job)\n" + START,
        },
    )
    assert len(problems) == 1
    assert "loads its model per request (sentence_transformers.SentenceTransformer(...))" in problems[0]
    assert "helpers.py:3" in problems[0]  # where the load is


def test_a_load_in_a_relative_import_of_a_package(tmp_path) -> None:  # type: ignore[no-untyped-def]
    problems = _worker(
        tmp_path,
        {
            "worker/__init__.py": "",
            "worker/model.py": "import torch\ndef weights():\n    return torch.load('w.pt')\n",
            "worker/serve.py": "from .model import weights\ndef run(job):\n    return weights()\n",
            "handler.py": "import runpod, torch\nfrom worker.serve import run\nW = torch.load('w.pt')\n"
            "handler = run\n" + START,
        },
    )
    assert len(problems) == 1 and "(torch.load(...))" in problems[0] and "model.py:3" in problems[0]


def test_a_lambda_handler_that_loads(tmp_path) -> None:  # type: ignore[no-untyped-def]
    problems = _worker(
        tmp_path,
        {
            "handler.py": "import runpod\nfrom transformers import AutoModel\n"
            "M = AutoModel.from_pretrained('m')\n"
            "runpod.serverless.start({'handler': lambda job: AutoModel.from_pretrained('m')})\n",
        },
    )
    assert len(problems) == 1 and "'<lambda>' loads its model per request" in problems[0]


def test_a_method_handler_that_loads_through_self(tmp_path) -> None:  # type: ignore[no-untyped-def]
    problems = _worker(
        tmp_path,
        {
            "handler.py": "import runpod\nfrom keras.models import load_model\nWARM = load_model('m')\n"
            "class Worker:\n    def run(self, job):\n        return self.model()\n"
            "    def model(self):\n        return load_model('m')\n"
            "w = Worker()\nrunpod.serverless.start({'handler': w.run})\n",
        },
    )
    assert len(problems) == 1 and "'run' loads its model per request (keras.models.load_model" in problems[0]


def test_a_loader_assigned_to_a_variable(tmp_path) -> None:  # type: ignore[no-untyped-def]
    problems = _worker(
        tmp_path,
        {
            "handler.py": "import runpod, torch\nfetch = torch.load\nW = fetch('w')\n"
            "def handler(job):\n    return fetch('w')\n" + START,
        },
    )
    assert len(problems) == 1 and "(torch.load(...))" in problems[0]


def test_a_config_dict_variable_and_a_module_level_engine_pass(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The worker-vllm shape: an engine object built at module level, whose constructor loads."""
    problems = _worker(
        tmp_path,
        {
            "engine.py": "from vllm import LLM\nclass Engine:\n    def __init__(self):\n"
            "        self.llm = LLM(model='/runpod-volume/m')\n    def generate(self, p):\n"
            "        return self.llm.generate(p)\n",
            "handler.py": "import runpod as rp\nfrom engine import Engine\nENGINE = Engine()\n"
            "def handler(job):\n    return ENGINE.generate(job['input'])\n"
            "config = {'handler': handler, 'return_aggregate_stream': True}\n"
            "if __name__ == '__main__':\n    rp.serverless.start(config)\n",
        },
    )
    assert problems == []


def test_a_call_chain_deeper_than_python_follows_is_one_finding(tmp_path) -> None:  # type: ignore[no-untyped-def]
    chain = "".join(f"def f{i}():\n    return f{i + 1}()\n" for i in range(3000))
    problems = _worker(
        tmp_path,
        {
            "handler.py": "import runpod, torch\nW = torch.load('w')\n"
            + chain
            + "def f3000():\n    return 1\n"
            "def handler(job):\n    return f0()\n" + START
        },
    )
    assert problems and "nest too deeply" in problems[0]


def test_a_worker_without_any_load_is_still_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    problems = _worker(tmp_path, {"handler.py": "import runpod\ndef handler(job):\n    return 1\n" + START})
    assert len(problems) == 1 and "loads no model at module level" in problems[0]


def test_a_handler_that_is_not_utf8_is_exit_2(cli, project: Project) -> None:  # type: ignore[no-untyped-def]
    handler = project.root / "images" / "worker-embed" / "app" / "handler.py"
    handler.write_bytes(handler.read_bytes().replace(b"sentence embeddings", b"sentence embeddings \xe9"))
    result = cli("check", "--matrix", str(project.matrix))
    assert result.code == 2
    assert "handler.py is not UTF-8 text" in result.err and "Traceback" not in result.err
