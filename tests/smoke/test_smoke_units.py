"""The smoke suite's GPU-only logic, tested on the CPU (no torch needed): arch coverage, the
expected attention backend per GPU, the driver and libcuda verdicts, FLOP counts, result files."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from smoke.checks.dispatch import expected_backend
from smoke.checks.environment import arch_covered, libcuda_verdict, parse_driver_version
from smoke.checks.kernels import KernelEntry, read_lock
from smoke.checks.numerics import Case, cases
from smoke.expect import Expectations
from smoke.result import Check, SuiteResult

TORCH_211_ARCHS = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]


@pytest.mark.parametrize(
    ("arch", "arch_list", "covered"),
    [
        ("sm_90", TORCH_211_ARCHS, True),
        ("sm_89", TORCH_211_ARCHS, True),  # sm_86 cubins run on sm_89
        ("sm_70", TORCH_211_ARCHS, False),
        ("sm_110", TORCH_211_ARCHS, False),  # no sm_11x cubin, no PTX
        ("sm_100", ["sm_80", "sm_90", "compute_90"], True),  # PTX JITs forward
        ("sm_86", ["sm_90", "compute_90"], False),  # PTX never runs backward
        ("sm_103", ["sm_90", "sm_100f"], True),  # family-specific: every 10.x from 10.0 on
        ("sm_120", ["sm_90", "sm_100f", "compute_100f"], False),  # a family stays in its major
        ("sm_90", ["sm_90a"], True),
        ("sm_100", ["sm_90a", "compute_90a"], False),  # arch-specific: that arch only
        ("sm_90", ["sm_80", "gfx942", "", "sm_9x"], False),  # unreadable entries cover nothing
    ],
)
def test_arch_coverage(arch: str, arch_list: list[str], covered: bool) -> None:
    assert arch_covered(arch, arch_list) is covered


FA3 = KernelEntry("flash-attn3", "kernels-community/vllm-flash-attn3", "v1", "flash_attn_func", ("sm_90",), 3)
FA2 = KernelEntry(
    "flash-attn2",
    "kernels-community/flash-attn2",
    "v1",
    "flash_attn_func",
    ("sm_80", "sm_86", "sm_89", "sm_90"),
    2,
)
BOTH = Expectations(flash_attention=(2, 3))


def results(**statuses: str) -> list[Check]:
    return [Check(name.replace("__", ".").replace("_", "-"), status) for name, status in statuses.items()]


def test_h100_must_get_fa3() -> None:
    ran = results(attention__kernel__flash_attn3="pass", attention__sdpa__flash="pass")
    assert expected_backend(ran, [FA3, FA2], BOTH, "sm_90").status == "pass"
    missing = results(attention__kernel__flash_attn3="fail", attention__kernel__flash_attn2="pass")
    verdict = expected_backend(missing, [FA3, FA2], BOTH, "sm_90")
    assert verdict.status == "fail" and "attention.kernel.flash-attn3" in verdict.message


def dispatched(*backends: list[str], status: str = "pass") -> list[Check]:
    """attention.sdpa.default as it ran: the backends observed for each (square) case."""
    cases = [{"case": f"s128-case{i}", "dispatch": b} for i, b in enumerate(backends)]
    return [Check("attention.sdpa.default", status, data={"cases": cases})]  # type: ignore[arg-type]


def test_a100_gets_fa2_and_images_without_fa_get_a_fused_sdpa_backend_as_observed() -> None:
    ran = results(attention__kernel__flash_attn2="pass")
    assert expected_backend(ran, [FA3, FA2], BOTH, "sm_80").status == "pass"
    no_fa = Expectations()
    assert expected_backend(dispatched(["cudnn"], ["flash"]), [], no_fa, "sm_90").status == "pass"
    # What ran is observed: a check named flash that passed is not enough if math ran.
    verdict = expected_backend(dispatched(["flash"], ["math"]), [], no_fa, "sm_90")
    assert verdict.status == "fail" and "case1 ran ['math']" in verdict.message
    assert expected_backend(dispatched(["flash"], status="fail"), [], no_fa, "sm_90").status == "fail"


def test_fa3_expected_but_not_in_the_lock_fails() -> None:
    verdict = expected_backend([], [FA2], BOTH, "sm_90")
    assert verdict.status == "fail" and "no kernel for it" in verdict.message


def test_the_cpu_expects_torchs_cpu_flash_backend() -> None:
    assert expected_backend(dispatched(["flash"]), [], BOTH, None).status == "pass"
    assert expected_backend(dispatched(["math"]), [], BOTH, None).status == "fail"
    assert expected_backend(results(attention__sdpa__math="pass"), [], BOTH, None).status == "fail"


def test_driver_version_from_proc() -> None:
    text = (
        "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.65.06  Release Build  "
        "(dvs-builder@U16-I3-B03-4-3)  Sun Jul 27 06:54:38 UTC 2025\nGCC version:  gcc version 12.3.0\n"
    )
    assert parse_driver_version(text) == "580.65.06"
    assert (
        parse_driver_version("NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.14  Thu Feb 22")
        == "550.54.14"
    )
    assert parse_driver_version("nothing here") is None


def test_libcuda_verdicts() -> None:
    host = "/usr/lib/x86_64-linux-gnu/libcuda.so.580.65.06"
    assert libcuda_verdict([host], [host], "580.65.06") == (True, host)
    compat = "/usr/local/cuda/compat/libcuda.so.1"
    ok, message = libcuda_verdict([compat], ["/usr/local/cuda-13.0/compat/libcuda.so.580.82.07"], "580.65.06")
    assert not ok and "compat" in message and "LD_LIBRARY_PATH" in message
    ok, message = libcuda_verdict([host], ["/usr/lib/x86_64-linux-gnu/libcuda.so.575.51.03"], "580.65.06")
    assert not ok and "does not match the host driver" in message
    assert libcuda_verdict([], [], "580.65.06")[0] is False


def test_flops_follow_the_forward_formula() -> None:
    full = Case(1, 8, 8, 8192, 8192, 128, False, "bfloat16")
    assert full.flops == 4 * 1 * 8 * 8192 * 8192 * 128
    assert Case(1, 8, 2, 8192, 8192, 128, True, "bfloat16").flops == full.flops / 2
    assert full.label() == "s8192-d128-h8-full-bfloat16"
    decode = Case(2, 8, 2, 1, 4097, 64, True, "float16")
    assert decode.flops == 4 * 2 * 8 * 1 * 4097 * 64  # one query row: the mask hides nothing
    assert decode.label() == "q1-k4097-d64-gqa8:2-causal-float16"


def test_cases_cover_odd_lengths_cross_and_decode_shapes() -> None:
    for on_gpu in (False, True):
        every = cases(on_gpu)
        assert any(c.q_len == c.k_len and c.k_len % 2 == 1 for c in every)  # a tail tile
        assert any(c.q_len == 1 and c.k_len > 1 for c in every)  # decode
        assert any(1 < c.q_len < c.k_len for c in every)
        assert any(c.kv_heads < c.heads for c in every) and any(c.causal for c in every)


def test_results_as_json_and_junit(tmp_path: Path) -> None:
    result = SuiteResult(
        "v",
        {"device": "cpu"},
        "2026-11-22T10:00:00+00:00",
        1.5,
        (
            Check("environment.torch-version", "pass", "2.11.0+cu130"),
            Check("attention.kernel.flash-attn3", "fail", "relative error nan"),
            Check("environment.device-arch", "skipped", "no CUDA device"),
        ),
    )
    json_path, xml_path = result.write(tmp_path, "v")
    document = json.loads(json_path.read_text())
    assert document["passed"] is False and document["counts"] == {"pass": 1, "fail": 1, "skipped": 1}
    suite = ET.parse(xml_path).getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == "1" and suite.get("skipped") == "1"
    failed = [c for c in suite.findall("testcase") if c.find("failure") is not None]
    assert [(c.get("classname"), c.get("name")) for c in failed] == [
        ("smoke.attention", "kernel.flash-attn3")
    ]


def test_kernels_lock_as_render_writes_it(tmp_path: Path) -> None:
    lock = tmp_path / "kernels.lock.json"
    lock.write_text(
        json.dumps(
            {
                "version": 1,
                "kernels": [
                    {
                        "name": "flash-attn3",
                        "repo_id": "kernels-community/vllm-flash-attn3",
                        "revision": "v1",
                        "function": "flash_attn_func",
                        "archs": ["sm_90"],
                        "flash_attention": 3,
                        "local_path": None,
                    }
                ],
            }
        )
    )
    assert read_lock(lock) == [FA3]
    assert read_lock(None) == [] and read_lock(tmp_path / "absent.json") == []


def test_expectations_from_the_image_environment() -> None:
    expect = Expectations.from_env(
        {
            "SMOKE_VARIANT": "w",
            "SMOKE_TORCH": "2.11.0+cu130",
            "SMOKE_FLASH_ATTENTION": "2,3",
            "SMOKE_INPUT": '{"texts": ["a"]}',
            "SMOKE_OUTPUT_SHAPE": "1,384",
            "SMOKE_HANDLER": "/app/handler.py",
            "SMOKE_CUDA": "",
        }
    )
    assert expect.flash_attention == (2, 3) and expect.output_shape == (1, 384)
    assert expect.sample_input == {"texts": ["a"]} and expect.handler == Path("/app/handler.py")
    assert expect.cuda is None  # empty means undeclared


def test_a_kernel_outside_sdpa_is_named_by_what_the_profiler_saw() -> None:
    from smoke.checks.dispatch import kernels_seen

    names = {
        "aten::empty",
        "aten::_scaled_dot_product_flash_attention_for_cpu",
        "flash_attn_3::fwd",
        "void flash::flash_fwd_kernel<Flash_fwd_kernel_traits<128, 128, 64, 4>>(Flash_fwd_params)",
        "cudaLaunchKernel",
    }
    seen = kernels_seen(names)
    assert seen[0] == "flash_attn_3::fwd" and seen[1].startswith("void flash::flash_fwd_kernel<")
    assert not any(n.startswith(("aten::", "cuda")) for n in seen)


@pytest.mark.parametrize(
    ("arch", "cudnn", "deprioritized", "first"),
    [
        (None, None, "", "flash"),  # CPU: priority_order_cpp
        ("sm_90", 91900, "", "cudnn"),  # H100 with torch 2.11's cuDNN 9.19: cuDNN first
        ("sm_90", 91900, "1", "flash"),  # TORCH_CUDNN_SDPA_DEPRIORITIZED=1
        ("sm_90", 91500, "", "flash"),  # cuDNN 9.15.0 is not newer than 9.15.0
        ("sm_100", 91900, "", "cudnn"),
        ("sm_80", 91900, "", "flash"),  # A100: flash first
        ("sm_89", 91900, "", "flash"),
    ],
)
def test_the_sdpa_expectation_follows_torch_priority_order(  # type: ignore[no-untyped-def]
    monkeypatch, arch, cudnn, deprioritized, first
) -> None:
    from smoke.checks.dispatch import sdpa_preference

    monkeypatch.setenv("TORCH_CUDNN_SDPA_DEPRIORITIZED", deprioritized)
    assert sdpa_preference(arch, cudnn)[0] == first
    assert "math" not in sdpa_preference(arch, cudnn)


def test_an_h100_that_ran_flash_where_cudnn_comes_first_passes_and_says_so() -> None:
    no_fa = Expectations(flash_attention=())
    verdict = expected_backend(dispatched(["flash"]), [], no_fa, "sm_90", 91900)
    assert verdict.status == "pass" and "first choice here, cudnn, took 0 of" in verdict.message
    assert verdict.data["expected"][0] == "cudnn" and verdict.data["cudnn"] == 91900


def test_an_environment_check_that_raises_fails_alone_and_the_others_report() -> None:
    """torch 2.11 has no torch._C._cuda_getDriverVersion: the check that called it raised, and the
    group's one expression turned all six checks into one failed environment.crashed."""
    from smoke.checks import environment

    def raising(_: Expectations) -> Check:
        raise AttributeError("module 'torch._C' has no attribute '_cuda_getDriverVersion'")

    names = [name for name, _ in environment.CHECKS]
    original = environment.CHECKS
    environment.CHECKS = tuple((n, raising if n == "environment.driver" else r) for n, r in original)
    try:
        results = environment.checks(Expectations())
    finally:
        environment.CHECKS = original
    assert [c.name for c in results] == names and len(names) == 6
    driver = next(c for c in results if c.name == "environment.driver")
    assert driver.status == "fail"
    assert (
        driver.message
        == "crashed: AttributeError: module 'torch._C' has no attribute '_cuda_getDriverVersion'"
    )
    assert "Traceback" in driver.data["traceback"]


def test_the_driver_and_its_cuda_api_version_come_from_the_driver_with_their_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from smoke.checks import environment

    proc = tmp_path / "version"
    monkeypatch.setattr(environment, "PROC_VERSION", proc)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # no nvidia-smi
    assert environment.host_driver() == (None, None)
    assert environment.no_device_reason().startswith("no driver")
    proc.write_text(
        "NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.65.06  Sun Jul 27 06:54:38 UTC 2025\n"
    )
    assert environment.host_driver() == ("580.65.06", str(proc))
    # nvidia-smi, where /proc says nothing (a container without /proc/driver/nvidia)
    proc.unlink()
    (tmp_path / "bin").mkdir()
    smi = tmp_path / "bin" / "nvidia-smi"
    smi.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = --query-gpu=driver_version ]; then echo 580.95.05; exit 0; fi\n'
        "echo '| NVIDIA-SMI 580.95.05   Driver Version: 580.95.05   CUDA Version: 13.0 |'\n"
    )
    smi.chmod(0o755)
    monkeypatch.setattr(environment, "LIBCUDA", "libcuda-that-is-not-here.so.1")
    assert environment.host_driver() == ("580.95.05", "nvidia-smi --query-gpu=driver_version")
    assert environment.driver_api_version() == (13000, "nvidia-smi")
