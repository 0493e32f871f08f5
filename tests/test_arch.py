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
