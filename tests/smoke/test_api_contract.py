"""The contract test's collector (tests/api_contract.py) reads what the source really calls."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import api_contract
from conftest import REPO


def test_paths_follow_imports_aliases_and_leave_out_guarded_fallbacks() -> None:
    source = """
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend as B, sdpa_kernel
import numpy

def f(x):
    torch._C._cuda_getDriverVersion()
    F.scaled_dot_product_attention(x, x, x)
    with sdpa_kernel(B.FLASH_ATTENTION):
        pass
    if hasattr(torch.backends.cuda, "is_flash_attention_available"):
        torch.backends.cuda.is_flash_attention_available()
    numpy.zeros(3)
    torch.cuda.get_device_properties(0).major
"""
    assert api_contract.attribute_paths(source) == {
        "torch",
        "torch.nn.functional",
        "torch._C._cuda_getDriverVersion",
        "torch.nn.functional.scaled_dot_product_attention",
        "torch.nn.attention.SDPBackend",
        "torch.nn.attention.SDPBackend.FLASH_ATTENTION",
        "torch.nn.attention.sdpa_kernel",
        "torch.cuda.get_device_properties",
        "torch.backends.cuda",  # the object hasattr asks: that must exist
    }


def test_the_call_of_the_function_torch_2_11_lacks_was_in_the_contract_before_issue_28() -> None:
    """The driver check of stop 25 (git history) called torch._C._cuda_getDriverVersion: the
    collector finds it there, so the contract test would have failed on that code."""
    old = subprocess.run(
        ["git", "-C", str(REPO), "show", "8e5f803:smoke/checks/environment.py"],
        capture_output=True,
        text=True,
        check=False,
    )
    if old.returncode != 0:  # a shallow clone without that commit
        import pytest

        pytest.skip("commit 8e5f803 is not in this clone")
    assert "torch._C._cuda_getDriverVersion" in api_contract.attribute_paths(old.stdout)
    now = api_contract.paths_in([REPO / "smoke" / "checks" / "environment.py"])
    assert "torch._C._cuda_getDriverVersion" not in now


def test_resolving_names_what_is_missing_here() -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(Path(api_contract.__file__)),
            "json.dumps",
            "json.no_such_thing",
            "os.path.join",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == '["json.no_such_thing"]'
