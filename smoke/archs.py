"""Whether torch's arch list runs on a GPU: the one rule, used inside images by the smoke suite
(`environment.device-arch`, on the list torch reports) and before any build by buildtool's policy
(on the list a torch wheel was built with, buildtool.facts). Standard library only."""

from __future__ import annotations

import re

# sm_90, sm_90a (arch-specific), sm_100f (family), compute_90 (PTX), compute_100f ...
ARCH_ENTRY = re.compile(r"(sm|compute)_(\d+)(\d)([af]?)")


def arch_covered(arch: str, arch_list: list[str]) -> bool:
    """Whether torch's arch list runs on this device. sm_XY cubins run on the same major with a
    minor >= Y (sm_89 runs sm_86), as do family ones (sm_100f); arch-specific ones (sm_90a) on that
    arch only; PTX (compute_XY) JITs to anything newer. Entries it cannot read cover nothing, rather
    than failing the whole environment group."""
    device = ARCH_ENTRY.fullmatch(arch)
    if device is None:
        return False
    major, minor = int(device[2]), int(device[3])
    for entry in arch_list:
        parsed = ARCH_ENTRY.fullmatch(entry.strip())
        if parsed is None:
            continue
        kind, e_major, e_minor, suffix = parsed[1], int(parsed[2]), int(parsed[3]), parsed[4]
        if suffix == "a":
            covered = (e_major, e_minor) == (major, minor)
        elif kind == "sm" or suffix == "f":
            covered = e_major == major and e_minor <= minor
        else:
            covered = (e_major, e_minor) <= (major, minor)
        if covered:
            return True
    return False


def torch_arch_list(cubins: tuple[str, ...], ptx: tuple[str, ...]) -> list[str]:
    """torch.cuda.get_arch_list()'s notation for a build: ("8.0", "9.0"), ("9.0",) ->
    ['sm_80', 'sm_90', 'compute_90']."""
    return [f"sm_{c.replace('.', '')}" for c in cubins] + [f"compute_{c.replace('.', '')}" for c in ptx]
