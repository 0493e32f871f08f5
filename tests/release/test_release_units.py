"""Semver tag rules and host floors (no registry needed)."""

from __future__ import annotations

import pytest
from packaging.version import Version

from buildtool.errors import ConfigError
from buildtool.facts import host_floor
from buildtool.release import parse_version, version_tags


@pytest.mark.parametrize(
    ("tag", "tags"),
    [
        ("v1.4.2", ("1.4.2", "1.4", "1")),
        ("v2.0", ("2.0.0", "2.0", "2")),
        ("v1.5.0rc1", ("1.5.0rc1",)),
        ("v1.5.0.dev3", ("1.5.0.dev3",)),
    ],
)
def test_version_tags(tag: str, tags: tuple[str, ...]) -> None:
    assert version_tags(parse_version(tag)) == tags


def test_a_tag_that_is_no_version_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="is not a version"):
        parse_version("release-candidate")
    assert parse_version("1.0.0") == Version("1.0.0")


def test_host_floor_for_runpod_templates() -> None:
    floor = host_floor("13.0")
    assert floor.allowed_cuda_versions == ("13.0",) and floor.driver == "580.65"
    older = host_floor("12.4")
    assert older.allowed_cuda_versions == ("12.4", "12.5", "12.6", "12.7", "12.8", "12.9", "13.0")
    assert host_floor(None).allowed_cuda_versions == ()
