"""GPU architectures: every suffix torch and CUDA define, and arbitrary text, parse or say why."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from buildtool.arch import SUFFIXES, Arch, ArchRule, InvalidArch


@settings(max_examples=300, deadline=1000)
@given(
    major=st.integers(1, 98),
    minor=st.integers(0, 9),
    suffix=st.sampled_from(SUFFIXES),
    form=st.sampled_from(["sm", "compute", "dotted"]),
)
def test_every_written_form_is_one_arch(major: int, minor: int, suffix: str, form: str) -> None:
    written = {"sm": f"sm_{major}{minor}{suffix}", "compute": f"compute_{major}{minor}{suffix}"}.get(
        form, f"{major}.{minor}{suffix}"
    )
    arch = Arch.parse(written)
    assert (arch.major, arch.minor, arch.suffix) == (major, minor, suffix)
    assert Arch.parse(arch.sm) == arch == Arch.parse(arch.torch_entry)
    assert ArchRule.parse(f"{major}.x").covers(arch) and ArchRule.parse(f"sm_{major}{minor}").covers(arch)
    assert not ArchRule.parse(f"{major + 1}.x").covers(arch)


@settings(max_examples=500, deadline=1000)
@given(st.text(max_size=12))
def test_any_text_parses_or_says_why(text: str) -> None:
    for parse in (Arch.parse, ArchRule.parse):
        try:
            parse(text)
        except InvalidArch as exc:
            assert repr(text) in str(exc) or text in str(exc)


@pytest.mark.parametrize(
    ("written", "capability", "torch"),
    [
        ("sm_90a", (9, 0), "9.0a"),
        ("sm_100f", (10, 0), "10.0f"),
        ("sm_120", (12, 0), "12.0"),
        ("8.6", (8, 6), "8.6"),
    ],
)
def test_torch_and_cuda_spellings(written: str, capability: tuple[int, int], torch: str) -> None:
    arch = Arch.parse(written)
    assert arch.capability == capability and arch.torch_entry == torch


def test_the_policy_and_the_smoke_suite_judge_arch_coverage_alike() -> None:
    """One rule (smoke/archs.py): the policy applies it to the arch list a wheel was built with,
    the smoke suite to the list torch reports in the image. For the measured wheel the lists are
    the same, so every GPU of the table gets the same verdict from both."""
    from buildtool import facts
    from smoke.archs import arch_covered, torch_arch_list
    from smoke.checks.environment import arch_covered as suite_rule

    measured = next(b for b in facts.TORCH_BUILDS if b.torch == "2.11.0" and b.local == "cu130")
    reported = [
        "sm_75",
        "sm_80",
        "sm_86",
        "sm_90",
        "sm_100",
        "sm_120",
    ]  # what that wheel printed (its source)
    assert torch_arch_list(measured.archs, measured.ptx) == reported
    assert suite_rule is arch_covered
    for arch in ("sm_70", "sm_80", "sm_86", "sm_89", "sm_90", "sm_100", "sm_103", "sm_110", "sm_120"):
        assert facts.wheel_covers_arch(measured, arch) == arch_covered(arch, reported), arch
    with_ptx = next(b for b in facts.TORCH_BUILDS if b.ptx)
    assert torch_arch_list(with_ptx.archs, with_ptx.ptx)[-1] == "compute_120"
    assert facts.wheel_covers_arch(with_ptx, "sm_121") and not facts.wheel_covers_arch(measured, "sm_110")
