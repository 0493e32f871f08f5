"""Each policy, shown accepting and refusing, on edits of the real matrix.yaml."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from conftest import Project

from buildtool import facts
from buildtool.config.matrix import load_matrix
from buildtool.errors import Location
from buildtool.plan import make_plan
from buildtool.policy import CheckedPlan, Finding, check_dockerfile, check_handler, check_plan, tag_facts


def checked(project: Project) -> CheckedPlan:
    return check_plan(make_plan(load_matrix(project.matrix)))


def messages(findings: tuple[Finding, ...], rule: str) -> list[str]:
    return [f.problem.render() for f in findings if f.problem and f.rule == rule]


def test_repository_matrix_has_no_errors(project: Project) -> None:
    result = checked(project)
    assert result.errors == ()
    planned = make_plan(load_matrix(project.matrix)).variants
    assert len(planned) > 1 and [v.name for v in result.variants] == [v.name for v in planned]


# --- tiers ---


def test_tier_1_passes_tier_2_warns(project: Project) -> None:
    result = checked(project)
    tier = [f for f in result.findings if f.rule == "tier"]
    assert [f.severity for f in tier] == ["warning"]
    assert "pytorch-torch211-cu130" in tier[0].problem.message and "Tier 2" in tier[0].problem.message


def test_tier_outside_allowed_tiers_is_refused(project: Project) -> None:
    project.edit("allowed_tiers: [1, 2, 3]", "allowed_tiers: [1]")
    errors = messages(checked(project).errors, "tier")
    assert errors and all("pytorch-torch211-cu130" in e for e in errors)
    assert "allowed tiers are 1" in errors[0]


TIER3 = """
  - name: custom-cu130
    ref: {ref}
    tier: 3
    cuda: "13.0"
    cudnn: 9
    torch: 2.11.0+cu130
    python: "3.11"
    built_on: {under}
"""


def add_tier3(project: Project, ref: str, under: str) -> None:
    project.edit("\n# GPUs RunPod offers", TIER3.format(ref=ref, under=under) + "\n# GPUs RunPod offers")
    project.edit("base: [runpod-torch211-cu130,", "base: [custom-cu130, runpod-torch211-cu130,")


def test_tier_3_under_ghcr_on_a_tier_2_base_passes(project: Project) -> None:
    add_tier3(project, "ghcr.io/acme/torch:2.11.0-cu130", "pytorch-torch211-cu130")
    result = checked(project)
    assert result.errors == ()
    assert "custom-cu130" in {cv.base.name for cv in result.variants}


def test_tier_3_outside_ghcr_is_refused(project: Project) -> None:
    add_tier3(project, "docker.io/acme/torch:2.11.0-cu130", "pytorch-torch211-cu130")
    errors = messages(checked(project).errors, "tier")
    assert errors and "not under ghcr.io" in errors[0]


def test_tier_3_on_a_tier_3_base_is_refused(project: Project) -> None:
    add_tier3(project, "ghcr.io/acme/torch:2.11.0-cu130", "custom-cu130")
    errors = messages(checked(project).errors, "tier")
    assert errors and "must overlay a Tier-1 or Tier-2 base" in errors[0]


def test_base_outside_the_catalogue_is_refused(project: Project, cli) -> None:  # type: ignore[no-untyped-def]
    project.edit("base: [runpod-torch211-cu130,", "base: [runpod-torch211-cu13,")
    result = cli("check", "--matrix", str(project.matrix))
    assert result.code == 2
    assert "unknown base 'runpod-torch211-cu13'" in result.err
    assert "Perhaps you meant 'runpod-torch211-cu130'?" in result.err


# --- nvidia/cuda everywhere ---


def test_nvidia_cuda_in_the_catalogue_is_refused_even_when_unused(project: Project) -> None:
    project.edit("ref: runpod/base:0.6.3-cuda12.8.1", "ref: nvidia/cuda:12.8.1-base-ubuntu22.04")
    errors = messages(checked(project).errors, "refused-repository")
    assert len(errors) == 1 and f"matrix.yaml:{project.line_of('nvidia/cuda')}:" in errors[0]


@pytest.mark.parametrize(
    ("dockerfile", "line"),
    [
        ("FROM nvidia/cuda:13.0.0-devel-ubuntu22.04\n", 1),
        ("ARG BASE=nvidia/cuda:13.0.0-devel-ubuntu22.04\nFROM ${BASE}\n", 2),
        ("ARG BASE\nFROM ${BASE:-nvidia/cuda:13.0.0-devel-ubuntu22.04}\n", 2),
        (
            "FROM runpod/pytorch:2.11.0-cuda13.0-cudnn9-devel AS torch\n"
            "FROM --platform=linux/amd64 nvidia/cuda:13.0.0-runtime-ubuntu22.04 AS runtime\n"
            "COPY --from=torch / /\n",
            2,
        ),
    ],
    ids=["plain", "arg-default", "arg-fallback", "second-stage"],
)
def test_nvidia_cuda_in_any_from_is_refused(project: Project, dockerfile: str, line: int) -> None:
    matrix = load_matrix(project.matrix)
    findings = check_dockerfile(dockerfile, Path("build/v/Dockerfile"), "v", {}, matrix)
    assert [f.rule for f in findings] == ["refused-repository"]
    assert findings[0].problem.location == Location(Path("build/v/Dockerfile"), line)


def test_nvidia_cuda_through_a_build_arg_is_refused(project: Project) -> None:
    matrix = load_matrix(project.matrix)
    text = "ARG BASE_IMAGE=runpod/pytorch:2.11.0-cuda13.0-cudnn9-devel\nFROM ${BASE_IMAGE}\n"
    assert check_dockerfile(text, Path("D"), "v", {}, matrix) == []
    findings = check_dockerfile(
        text, Path("D"), "v", {"BASE_IMAGE": "nvidia/cuda:13.0.0-devel-ubuntu22.04"}, matrix
    )
    assert [f.rule for f in findings] == ["refused-repository"]
    assert findings[0].problem.location and findings[0].problem.location.line == 2


def test_from_outside_the_catalogue_and_unresolved_args_are_refused(project: Project) -> None:
    matrix = load_matrix(project.matrix)
    outside = check_dockerfile("FROM ubuntu:24.04\n", Path("D"), "v", {}, matrix)
    assert [f.rule for f in outside] == ["dockerfile-from"]
    unresolved = check_dockerfile("ARG BASE\nFROM ${BASE}\n", Path("D"), "v", {}, matrix)
    assert "no default and no build arg" in unresolved[0].problem.message
    stage = "FROM runpod/pytorch:2.11.0-cuda13.0-cudnn9-devel AS b\nFROM b\nFROM scratch\n"
    assert check_dockerfile(stage, Path("D"), "v", {}, matrix) == []


# --- CUDA <-> torch, and tags ---


def test_torch_wheel_must_match_base_cuda(project: Project) -> None:
    project.edit("torch: 2.4.0+cu124", "torch: 2.4.0+cu130")
    errors = messages(checked(project).errors, "torch-cuda")
    assert len(errors) == 1
    assert "2.4.0+cu130" in errors[0] and "CUDA 12.4" in errors[0] and "use torch 2.4.0+cu124" in errors[0]


def test_cpu_wheel_on_a_cuda_base_is_refused(project: Project) -> None:
    project.edit("torch: 2.4.0+cu124", "torch: 2.4.0+cpu")
    assert "CPU-only" in messages(checked(project).errors, "torch-cuda")[0]


def test_torch_without_local_tag_is_refused(project: Project) -> None:
    project.edit("torch: 2.4.0+cu124", "torch: 2.4.0")
    assert "has no local tag" in messages(checked(project).errors, "torch-cuda")[0]


def test_catalogue_entry_contradicting_its_tag_is_refused(project: Project) -> None:
    project.edit('    cuda: "12.4"\n', '    cuda: "12.6"\n')
    errors = messages(checked(project).errors, "tag")
    assert any("declares cuda 12.6 but its tag" in e and "says 12.4" in e for e in errors)


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("runpod/pytorch:2.11.0-cuda13.0-cudnn9-devel", {"torch": "2.11.0", "cuda": "13.0", "cudnn": "9"}),
        (
            "runpod/pytorch:2.4.0-py3.11-cuda12.4.1-devel-ubuntu22.04",
            {"torch": "2.4.0", "cuda": "12.4", "python": "3.11"},
        ),
        ("runpod/pytorch:1.0.2-cu1300-torch291-ubuntu2404", {"torch": "2.9.1", "cuda": "13.0"}),
        ("runpod/base:0.6.3-cuda12.8.1", {"cuda": "12.8"}),
        ("ghcr.io/acme/app:v1", {}),
    ],
)
def test_tag_facts(ref: str, expected: dict[str, str]) -> None:
    assert tag_facts(ref) == expected


# --- archs and FlashAttention ---


def test_arch_the_wheel_has_no_kernels_for_is_refused(project: Project) -> None:
    project.edit(
        "  - {name: B200,", "  - {name: V100, runpod_id: Tesla V100-SXM2-32GB, arch: sm_70}\n  - {name: B200,"
    )
    result = checked(project)
    assert result.errors == ()  # implied by "all": refused, not an error
    torch211 = next(cv for cv in result.variants if cv.name == "worker-embed-runpod-torch211-cu130")
    reasons = {r.gpu.name: r.reason for r in torch211.refused}
    assert "ships no kernels for sm_70" in reasons["V100"]
    torch240 = next(cv for cv in result.variants if cv.name == "pytorch-runtime-runpod-torch240-cu124")
    assert "V100" in [g.name for g in torch240.targets]  # torch 2.4 cu124 still ships sm_70


def test_explicit_gpu_the_wheel_cannot_run_is_an_error(project: Project) -> None:
    project.edit(
        "  - {name: B200,", "  - {name: V100, runpod_id: Tesla V100-SXM2-32GB, arch: sm_70}\n  - {name: B200,"
    )
    project.edit("  gpus: all\n", "  gpus: [H100, V100]\n")
    errors = messages(checked(project).errors, "arch")
    assert any("V100 (sm_70)" in e and "worker-embed-runpod-torch211-cu130" in e for e in errors)


def test_fa3_only_on_sm_90(project: Project) -> None:
    project.edit("arch: sm_80, flash_attention: 2", "arch: sm_80, flash_attention: 3")
    errors = messages(checked(project).errors, "flash-attention")
    assert len(errors) == 1 and "sm_80 runs FlashAttention 2" in errors[0]


def test_fa2_on_sm_80_86_89_and_fa3_on_sm_90() -> None:
    assert facts.FLASH_ATTENTION_BY_ARCH == {"sm_80": (2,), "sm_86": (2,), "sm_89": (2,), "sm_90": (2, 3)}


def test_wheel_coverage_follows_cuda_binary_compatibility() -> None:
    build = facts.find_torch_build("2.11.0", "cu130")
    assert build is not None
    assert facts.wheel_covers_arch(build, "sm_89")  # sm_86 cubins run on sm_89
    assert not facts.wheel_covers_arch(build, "sm_70")
    assert not facts.wheel_covers_arch(build, "sm_110")  # no sm_11x cubin, no PTX measured
    assert facts.cuda_of_local_tag("cu130") == "13.0"
    assert facts.cuda_of_local_tag("cu124") == "12.4"
    assert facts.cuda_of_local_tag("cpu") is None


# --- serverless workers ---


def write_handler(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "handler.py"
    path.write_text(textwrap.dedent(body))
    return path


LOADERS = ("SentenceTransformer", "from_pretrained", "torch.load")


def test_handler_loading_at_module_level_passes(tmp_path: Path) -> None:
    path = write_handler(
        tmp_path,
        """
        import runpod
        from sentence_transformers import SentenceTransformer
        MODEL = SentenceTransformer("/models/x")
        def handler(job):
            return MODEL.encode(job["input"]["texts"]).tolist()
        if __name__ == "__main__":
            runpod.serverless.start({"handler": handler})
    """,
    )
    assert check_handler(path, LOADERS) == []


def test_handler_loading_per_request_is_refused(tmp_path: Path) -> None:
    path = write_handler(
        tmp_path,
        """
        import runpod
        from transformers import AutoModel
        def handler(job):
            model = AutoModel.from_pretrained("/models/x")
            return model(job["input"])
        runpod.serverless.start({"handler": handler})
    """,
    )
    findings = check_handler(path, LOADERS)
    assert len(findings) == 1
    assert "loads its model per request" in findings[0].problem.message
    assert findings[0].problem.location and findings[0].problem.location.line == 5


def test_handler_loading_through_a_helper_is_refused(tmp_path: Path) -> None:
    path = write_handler(
        tmp_path,
        """
        import runpod, torch
        def get_model():
            return torch.load("/models/x.pt")
        def run(job):
            return get_model()(job["input"])
        runpod.serverless.start({"handler": run})
    """,
    )
    findings = check_handler(path, LOADERS)
    assert len(findings) == 1 and findings[0].problem.location and findings[0].problem.location.line == 4


def test_handler_module_without_a_model_load_or_start_is_refused(tmp_path: Path) -> None:
    no_load = write_handler(
        tmp_path,
        """
        import runpod
        def handler(job):
            return job
        runpod.serverless.start({"handler": handler})
    """,
    )
    assert "loads no model at module level" in check_handler(no_load, LOADERS)[0].problem.message
    no_start = write_handler(tmp_path, "def handler(job):\n    return job\n")
    assert "never calls runpod.serverless.start" in check_handler(no_start, LOADERS)[0].problem.message


def test_repository_worker_handler_passes(project: Project) -> None:
    matrix = load_matrix(project.matrix)
    worker = matrix.image("worker-embed")
    assert worker.handler is not None
    assert check_handler(worker.template / worker.handler, matrix.policy.model_loaders) == []


def test_baked_model_over_10_gb_is_refused(project: Project) -> None:
    project.edit("size_gb: 0.09", "size_gb: 14")
    errors = messages(checked(project).errors, "model-size")
    assert errors and "over the 10 GB limit" in errors[0] and "source: volume" in errors[0]


# --- kernels per torch version ---


def test_flash_attention_is_offered_only_to_a_torch_its_kernels_are_built_for(cli, project: Project) -> None:  # type: ignore[no-untyped-def]
    result = checked(project)
    by_name = {cv.name: cv for cv in result.variants}
    torch240 = by_name["pytorch-runtime-runpod-torch240-cu124"]
    assert torch240.flash_attention == (2, 3) and torch240.kernels == ()  # its GPUs run FA; torch 2.4 cannot
    assert any("has no build for torch 2.4.0" in n and "SDPA" in n for n in torch240.kernel_notes)
    torch211 = by_name["pytorch-runtime-runpod-torch211-cu130"]
    assert [k.name for k in torch211.kernels] == ["flash-attn3", "flash-attn2"] and not torch211.kernel_notes
    shown = cli("plan", "--matrix", str(project.matrix))
    assert "kernels not offered" in shown.out and "no build for torch 2.4.0" in shown.out


def test_a_kernel_its_torch_has_no_build_of_is_refused(cli, project: Project) -> None:  # type: ignore[no-untyped-def]
    project.edit(
        "kernels: [flash-attention]",
        "kernels:\n      - {name: fa2, repo_id: kernels-community/flash-attn2, revision: v1}",
    )
    result = cli("check", "--matrix", str(project.matrix))
    assert result.code == 2
    assert (
        "[pytorch-runtime-runpod-torch240-cu124] kernel fa2 (kernels-community/flash-attn2) has no "
        in result.err
    )
    assert "torch 2.11.0" not in result.err.split("no build for torch")[1].split("\n")[0]


# --- the rule registry ---


def test_every_rule_is_registered_once_with_its_scope_and_reason() -> None:
    from buildtool.policy import RULES, SCOPES

    assert {r.scope for r in RULES.values()} == set(SCOPES)  # every scope has rules, and no other
    assert all(r.reason and r.name == name for name, r in RULES.items())
    expected = {"refused-repository", "torch-cuda", "tag", "flash-attention", "tier", "torch", "arch"}
    expected |= {
        "model-size",
        "kernels-torch",
        "handler",
        "dependency-lock",
        "dockerfile-from",
        "image-secrets",
    }
    assert expected <= set(RULES)  # the built-in rules; a new rule adds itself


def test_a_new_rule_is_one_registered_function(project: Project) -> None:
    from buildtool.policy import RULES, registry

    @registry.rule("test-no-h200", "variant", "a test rule")
    def no_h200(variant, context):  # type: ignore[no-untyped-def]
        if any(g.name == "H200" for g in variant.targets):
            yield registry.error("targets H200", variant.location)

    try:
        errors = [f for f in checked(project).errors if f.rule == "test-no-h200"]
        assert errors and all(f.problem.variant for f in errors)
        with pytest.raises(ValueError, match="registered twice"):
            registry.rule("test-no-h200", "variant", "again")(no_h200)
    finally:
        del RULES["test-no-h200"]


def test_a_rule_option_is_a_policy_key_checked_against_its_type(cli, project: Project) -> None:  # type: ignore[no-untyped-def]
    from buildtool.policy import OPTIONS, RULES, RuleOption, registry

    @registry.rule("test-max-gpus", "variant", "a test rule", {"max_gpus": RuleOption(int, None, "an int")})
    def max_gpus(variant, context):  # type: ignore[no-untyped-def]
        limit = context.option("max_gpus")
        if limit is not None and len(variant.targets) > limit:
            yield registry.error(f"{len(variant.targets)} GPU targets, over {limit}", variant.location)

    try:
        assert cli("check", "--matrix", str(project.matrix)).code == 0  # unset: the rule does nothing
        project.edit("  max_baked_model_gb: 10\n", "  max_baked_model_gb: 10\n  max_gpus: 2\n")
        over = cli("check", "--matrix", str(project.matrix))
        targets = max(len(v.targets) for v in make_plan(load_matrix(project.matrix)).variants)
        assert over.code == 2 and f"{targets} GPU targets, over 2" in over.err
        project.edit("  max_gpus: 2\n", '  max_gpus: "two"\n')
        wrong = cli("check", "--matrix", str(project.matrix))
        assert (
            wrong.code == 2
            and f"matrix.yaml:{project.line_of('max_gpus')}: policy max_gpus must be int" in wrong.err
        )
        project.edit('  max_gpus: "two"\n', "  max_gpu: 2\n")
        typo = cli("check", "--matrix", str(project.matrix))
        assert typo.code == 2 and "unknown key 'max_gpu' in policy" in typo.err
        assert "Perhaps you meant 'max_gpus'?" in typo.err
    finally:
        del RULES["test-max-gpus"], OPTIONS["max_gpus"]


def test_buildtool_rules_lists_each_rule_with_its_scope_and_options(cli) -> None:  # type: ignore[no-untyped-def]
    from buildtool.policy import RULES

    result = cli("rules")
    assert result.code == 0 and f"{len(RULES)} policy rules" in result.out
    assert "image-size" in result.out and "max_image_gb (float)" in result.out
    scopes = [line.split("│")[2].strip() for line in result.out.splitlines() if line.count("│") == 5]
    assert scopes.index("image") > scopes.index("catalogue")  # listed in pipeline order


SERVERS = ("vllm serve", "vllm.entrypoints.openai.api_server")


def test_a_server_process_started_at_module_level_is_a_module_level_load(tmp_path: Path) -> None:
    """The OpenAI-proxy design: `vllm serve` started (and waited for) at module level, an async
    generator handler that forwards each job to it."""
    path = write_handler(
        tmp_path,
        """
        import os, subprocess, time, urllib.request
        import httpx, runpod
        MODEL = os.environ.get("MODEL_PATH", "/runpod-volume/models/llm")
        COMMAND = ["vllm", "serve", MODEL, "--host", "127.0.0.1", "--port", "8000"]
        SERVER = subprocess.Popen(COMMAND)
        def wait_until_ready():
            while True:
                try:
                    urllib.request.urlopen("http://127.0.0.1:8000/health")
                    return
                except OSError:
                    time.sleep(1)
        wait_until_ready()
        URL = "http://127.0.0.1:8000/v1/chat/completions"
        async def handler(job):
            async with httpx.AsyncClient() as client:
                async with client.stream("POST", URL, json=job["input"]) as r:
                    async for line in r.aiter_lines():
                        yield line
        if __name__ == "__main__":
            runpod.serverless.start({"handler": handler, "return_aggregate_stream": True})
    """,
    )
    assert check_handler(path, LOADERS, servers=SERVERS) == []
    # Without model_servers in the policy, the same worker loads nothing the rule knows.
    assert "start a model server" not in check_handler(path, LOADERS)[0].problem.hint  # type: ignore[operator]
    assert "loads no model at module level" in check_handler(path, LOADERS)[0].problem.message


def test_a_server_process_started_per_request_is_refused(tmp_path: Path) -> None:
    path = write_handler(
        tmp_path,
        """
        import asyncio, runpod
        from sentence_transformers import SentenceTransformer
        WARM = SentenceTransformer("/models/x")
        async def start_server(model):
            return await asyncio.create_subprocess_exec(
                "python", "-m", "vllm.entrypoints.openai.api_server", "--model", model
            )
        async def handler(job):
            server = await start_server(job["input"]["model"])
            yield {"pid": server.pid}
        runpod.serverless.start({"handler": handler})
    """,
    )
    findings = check_handler(path, LOADERS, servers=SERVERS)
    assert len(findings) == 1
    message = findings[0].problem.message
    assert "the handler 'handler' loads its model per request" in message
    assert "a 'vllm.entrypoints.openai.api_server' server process" in message
    assert findings[0].problem.location and findings[0].problem.location.line == 6


def test_a_process_that_is_not_a_model_server_loads_nothing(tmp_path: Path) -> None:
    path = write_handler(
        tmp_path,
        """
        import subprocess, runpod
        LOGGER = subprocess.Popen(["tail", "-f", "/var/log/worker.log"])
        def handler(job):
            return job
        runpod.serverless.start({"handler": handler})
    """,
    )
    findings = check_handler(path, LOADERS, servers=SERVERS)
    assert len(findings) == 1 and "loads no model at module level" in findings[0].problem.message
    assert "or start a model server (vllm serve, " in (findings[0].problem.hint or "")


def test_an_image_that_installs_its_own_torch_is_checked_against_each_base(project: Project) -> None:
    """vLLM-style images pin their own torch: it must match each base's CUDA, and becomes what the
    smoke suite expects."""
    kernels = "    kernels: [flash-attention]\n"
    project.edit(kernels, kernels + "    torch: 2.11.0+cu130\n")
    result = checked(project)
    refused = messages(result.errors, "image-torch")
    # The runtime image is built on the CUDA 12.4 base too: a +cu130 wheel there is refused.
    assert refused == [
        f"{project.matrix}:{project.line_of('name: pytorch-runtime')}: "
        "[pytorch-runtime-runpod-torch240-cu124] image 'pytorch-runtime' installs torch 2.11.0+cu130 "
        "(built for CUDA 13.0) on base "
        "'runpod-torch240-cu124' with CUDA 12.4: CUDA mismatch at run time\n"
        "  fix: exclude this base for the image, or install torch 2.11.0+cu124"
    ]
    # Where it matches, the variant runs that torch: its facts, and what smoke expects.
    noble = next(v for v in result.variants if v.name == "pytorch-runtime-runpod-torch291-cu130-noble")
    assert noble.torch == "2.11.0+cu130" and noble.torch_build is not None
    assert noble.torch_build.torch == "2.11.0"


# --- GPU type ids ---


def test_a_respelled_runpod_gpu_type_id_is_refused_with_runpods_spelling(project: Project) -> None:
    project.edit("runpod_id: NVIDIA H100 80GB HBM3,", "runpod_id: nvidia h100 80gb-hbm3,")
    (message,) = messages(checked(project).errors, "runpod-gpu-type")
    assert "which RunPod spells 'NVIDIA H100 80GB HBM3'" in message and "matrix.yaml:57" in message


def test_a_gpu_added_outside_the_serverless_pools_is_a_warning(project: Project) -> None:
    """A card no pool lists can still run pods: a warning naming the closest id, no error; a GPU the
    policy refuses (B200, sm_100) gets none, and the repository's cards are all in pools."""
    assert messages(checked(project).warnings, "runpod-gpu-type") == []
    project.edit(
        "  - {name: B200,", "  - {name: NEWCARD, runpod_id: NVIDIA L40S X, arch: sm_89}\n  - {name: B200,"
    )
    result = checked(project)
    (message,) = messages(result.warnings, "runpod-gpu-type")
    assert "'NVIDIA L40S X', which no RunPod serverless pool lists" in message
    assert "Perhaps you meant 'NVIDIA L40S'?" in message
    assert messages(result.errors, "runpod-gpu-type") == []
