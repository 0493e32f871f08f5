"""Secrets never reach an image: refused in build args (matrix.yaml), in the rendered Dockerfile and
the files of the build context, and in the built image (test_build, test_build_logic); passed at
build time as BuildKit secret mounts from the images' `secrets:`."""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest
from conftest import Project

TOKEN = "hf_" + "Qw7" * 12


def check(cli, project: Project):  # type: ignore[no-untyped-def]
    result = cli("check", "--matrix", str(project.matrix))
    assert TOKEN not in result.out + result.err  # said by its first four characters and length only
    return result


def test_a_token_in_a_build_arg_is_refused_at_the_image(cli, project: Project) -> None:  # type: ignore[no-untyped-def]
    project.edit(
        "    handler: app/handler.py\n", f"    handler: app/handler.py\n    args: {{HF_TOKEN: {TOKEN}}}\n"
    )
    result = check(cli, project)
    assert result.code == 2
    line = project.line_of("name: worker-embed")
    assert f"matrix.yaml:{line}:" in result.err
    assert (
        "image 'worker-embed' passes a Hugging Face token as build arg HF_TOKEN: 'hf_Q...' (39" in result.err
    )
    assert "RUNPOD_SECRET_" in result.err and "--mount=type=secret" in result.err


def test_a_token_in_a_deploy_setting_is_refused_and_a_secret_name_is_the_fix(cli, project: Project) -> None:  # type: ignore[no-untyped-def]
    project.edit("      workers_min: 0\n", f"      workers_min: 0\n      env: {{HF_TOKEN: {TOKEN}}}\n")
    result = check(cli, project)
    assert result.code == 2
    assert f"matrix.yaml:{project.line_of('env: {HF_TOKEN')}:" in result.err
    assert "passes a Hugging Face token as deploy.env HF_TOKEN: 'hf_Q...'" in result.err
    assert "name it under the image's secrets: [HF_TOKEN] instead" in result.err
    # Named as a secret, the deploy spec references it; its value stays with RunPod.
    project.edit(f"      env: {{HF_TOKEN: {TOKEN}}}\n", "")
    project.edit("    handler: app/handler.py\n", "    handler: app/handler.py\n    secrets: [HF_TOKEN]\n")
    assert check(cli, project).code == 0


def test_a_token_in_the_template_or_a_context_file_is_refused_with_its_line(cli, project: Project) -> None:  # type: ignore[no-untyped-def]
    handler = project.root / "images" / "worker-embed" / "app" / "handler.py"
    handler.write_text(handler.read_text() + f"\nFALLBACK_TOKEN = '{TOKEN}'\n")
    result = check(cli, project)
    assert result.code == 2
    lines = len(handler.read_text().splitlines())
    assert f"worker-embed-runpod-torch211-cu130/app/handler.py:{lines}: " in result.err
    assert "handler.py holds a Hugging Face token" in result.err
    handler.write_text(handler.read_text().replace(f"\nFALLBACK_TOKEN = '{TOKEN}'\n", ""))
    template = project.root / "images" / "worker-embed" / "Dockerfile.j2"
    template.write_text(template.read_text() + f"ENV RUNPOD_API_KEY=rpa_{'X1' * 20}\n")
    env = check(cli, project)
    assert env.code == 2 and "Dockerfile holds a RunPod API key: 'rpa_...' (44 characters)" in env.err


def test_declared_secrets_become_build_secret_mounts(cli, project: Project) -> None:  # type: ignore[no-untyped-def]
    project.edit("    handler: app/handler.py\n", "    handler: app/handler.py\n    secrets: [HF_TOKEN]\n")
    variant = "worker-embed-runpod-torch211-cu130"
    result = cli("render", "--matrix", str(project.matrix), "--select", variant, "--commit", project.commit)
    assert result.code == 0, result.err
    bake = json.loads((project.root / "build" / "docker-bake.json").read_text())
    assert bake["target"][variant]["secret"] == ["id=HF_TOKEN,env=HF_TOKEN"]
    project.edit("secrets: [HF_TOKEN]", "secrets: [hf-token]")
    bad = cli("check", "--matrix", str(project.matrix))
    assert bad.code == 2 and "secret name 'hf-token' is not an upper-case name" in bad.err


def _context_file(project: Project, name: str, content: bytes) -> Path:
    path = project.root / "images" / "worker-embed" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def _pem_key() -> bytes:
    done = subprocess.run(
        ["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        capture_output=True,
        check=True,
    )
    return done.stdout


def _der(pem: bytes, *form: str) -> bytes:
    done = subprocess.run(["openssl", *form, "-outform", "DER"], input=pem, capture_output=True, check=True)
    return done.stdout


@pytest.mark.parametrize(
    ("name", "what"),
    [
        (".env", "an environment file (.env)"),
        (".env.production", "an environment file (.env)"),
        ("certs/server.p12", "a key store"),
        ("deploy/id_ed25519", "an SSH private key"),
        (".docker/config.json", "a credentials file"),
    ],
)
def test_files_that_hold_secrets_by_convention_are_refused(
    cli, project: Project, name: str, what: str
) -> None:  # type: ignore[no-untyped-def]
    _context_file(project, name, b"DB_PASSWORD=correct-horse\nAWS_SECRET_ACCESS_KEY=abc\n")
    result = check(cli, project)
    assert result.code == 2 and f"{name} holds {what}" in result.err, result.err
    assert "correct-horse" not in result.err


def test_an_example_env_file_is_no_secret(cli, project: Project) -> None:  # type: ignore[no-untyped-def]
    _context_file(project, ".env.example", b"HF_TOKEN=\n")
    assert check(cli, project).code == 0


@pytest.mark.parametrize("form", [("pkey",), ("ec",)])
def test_a_der_private_key_is_refused(cli, project: Project, form: tuple[str, ...]) -> None:  # type: ignore[no-untyped-def]
    _context_file(project, "model/key.bin", _der(_pem_key(), *form))
    result = check(cli, project)
    assert result.code == 2 and "model/key.bin holds a private key (DER)" in result.err, result.err


def test_secrets_inside_archives_are_refused(cli, project: Project) -> None:  # type: ignore[no-untyped-def]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        pem = _pem_key()
        info = tarfile.TarInfo("keys/server.pem")
        info.size = len(pem)
        archive.addfile(info, io.BytesIO(pem))
    _context_file(project, "bundle.tar.gz", buffer.getvalue())
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("settings.py", f"TOKEN = '{TOKEN}'\n")
    _context_file(project, "extra.zip", zipped.getvalue())
    result = check(cli, project)
    assert result.code == 2
    assert "bundle.tar.gz!keys/server.pem holds a private key" in result.err
    assert "extra.zip!settings.py holds a Hugging Face token" in result.err and TOKEN not in result.err


def test_a_token_in_a_binary_file_is_refused(cli, project: Project) -> None:  # type: ignore[no-untyped-def]
    _context_file(project, "weights.bin", b"\x00\xff\xfe" * 100 + TOKEN.encode() + b"\x00\xff" * 50)
    result = check(cli, project)
    assert result.code == 2 and "weights.bin holds a Hugging Face token" in result.err


@pytest.mark.parametrize("name", ["prod.env", "secrets.env", ".envrc", ".pgpass", "kubeconfig"])
def test_more_files_that_hold_secrets_by_convention(cli, project: Project, name: str) -> None:  # type: ignore[no-untyped-def]
    _context_file(project, name, b"x\n")
    assert check(cli, project).code == 2


def test_archives_are_found_by_their_bytes_and_nested_ones_are_read(cli, project: Project) -> None:  # type: ignore[no-untyped-def]
    nested = _pem_key()
    for _ in range(3):
        nested = gzip.compress(nested)
    _context_file(project, "k.pem.gz.gz.gz", nested)
    _context_file(project, "data.bin", gzip.compress(f"TOKEN={TOKEN}\n".encode()))
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("arr.npy", f"{TOKEN}".encode())
    _context_file(project, "weights.npz", zipped.getvalue())
    result = check(cli, project)
    assert result.code == 2
    assert "k.pem.gz.gz.gz!" in result.err and "holds a private key" in result.err
    assert "data.bin!" in result.err and "weights.npz!arr.npy holds a Hugging Face token" in result.err


def test_an_archive_too_large_to_read_whole_is_refused(
    cli, project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    from buildtool.policy import secrets

    monkeypatch.setattr(secrets, "MAX_UNPACKED", 1 << 20)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in (("padding", b"\0" * (2 << 20)), ("key.pem", _pem_key())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    _context_file(project, "bundle.tgz", buffer.getvalue())
    result = check(cli, project)
    assert result.code == 2 and "bundle.tgz holds archives that unpack to more than 1 MiB" in result.err


def test_a_files_scan_is_shared_by_identical_files_and_by_nothing_else() -> None:
    """Variants of one template share their context's files: the scan of a name and content is
    made once, and a copy handed out; the same bytes under another name are scanned as that name."""
    from buildtool.policy.secrets import file_secrets

    token = "hf_" + "a" * 34
    content = f"line one\nTOKEN={token}\n".encode()
    first = file_secrets("app/settings.py", content)
    assert [(at, kind) for _, at, kind, _ in first] == [(2, "a Hugging Face token")]
    first.clear()
    assert len(file_secrets("app/settings.py", content)) == 1
    as_env = file_secrets(".env", content)
    assert {kind for _, _, kind, _ in as_env} == {"an environment file (.env)", "a Hugging Face token"}
    assert file_secrets("app/settings.py", content.replace(token.encode(), b"x")) == []
