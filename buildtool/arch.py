"""GPU architectures as compute capability plus suffix, the way CUDA and torch write them.

    sm_90, compute_90, 9.0     capability 9.0: cubins run on 9.x of the same major (binary compatibility)
    sm_90a, 9.0a               'a': arch-specific features (wgmma, TMA on Hopper), runs on 9.0 only
    sm_100f, 10.0f             'f': family-specific (CUDA 12.9+), runs on the 10.x family

A policy refuses one capability (`sm_100`: 10.0 with any suffix) or a whole generation (`10.x`,
`sm_10x`: every 10.y, with any suffix), so no spelling of a refused GPU becomes a build target.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SUFFIXES = ("", "a", "f")  # CUDA's arch-specific (a) and family-specific (f) targets
_SM = re.compile(r"(?:sm|compute)_(?P<major>[1-9][0-9]?)(?P<minor>[0-9])(?P<suffix>[af]?)")
_DOTTED = re.compile(r"(?P<major>[1-9][0-9]?)\.(?P<minor>[0-9])(?P<suffix>[af]?)")
_GENERATION = re.compile(r"(?:sm_(?P<sm>[1-9][0-9]?)x|(?P<dotted>[1-9][0-9]?)\.x)")
FORMS = "sm_90, sm_90a, sm_100f, 9.0 or 10.0a"


class InvalidArch(ValueError):
    """Not a GPU architecture; the message says why."""


@dataclass(frozen=True, order=True)
class Arch:
    major: int
    minor: int
    suffix: str = ""

    @classmethod
    def parse(cls, text: str) -> Arch:
        match = _SM.fullmatch(text) or _DOTTED.fullmatch(text)
        if match is None:
            raise InvalidArch(f"'{text}' is not a GPU architecture ({FORMS})")
        return cls(int(match["major"]), int(match["minor"]), match["suffix"])

    @property
    def sm(self) -> str:
        return f"sm_{self.major}{self.minor}{self.suffix}"

    @property
    def capability(self) -> tuple[int, int]:
        return self.major, self.minor

    @property
    def torch_entry(self) -> str:
        """TORCH_CUDA_ARCH_LIST's notation: 9.0, 9.0a, 10.0f."""
        return f"{self.major}.{self.minor}{self.suffix}"


@dataclass(frozen=True)
class ArchRule:
    """What a refused_archs entry covers: one capability, or a generation (minor None)."""

    major: int
    minor: int | None

    @classmethod
    def parse(cls, text: str) -> ArchRule:
        generation = _GENERATION.fullmatch(text)
        if generation:
            return cls(int(generation["sm"] or generation["dotted"]), None)
        try:
            arch = Arch.parse(text)
        except InvalidArch:
            raise InvalidArch(
                f"'{text}' is neither a GPU architecture ({FORMS}) nor a generation (10.x, sm_10x)"
            ) from None
        return cls(arch.major, arch.minor)

    def covers(self, arch: Arch) -> bool:
        return arch.major == self.major and (self.minor is None or arch.minor == self.minor)

    def describe(self) -> str:
        if self.minor is None:
            return f"every {self.major}.x architecture"
        return f"capability {self.major}.{self.minor} (sm_{self.major}{self.minor}, with any suffix)"
