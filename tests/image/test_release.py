"""Signing keys and the channel tree, with the real openssl and rauc on small bundles (the full
release of a built image is exercised by tests/system/test_update.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from smartos_image import keys, release
from smartos_image.config import Board, Channel
from smartos_image.errors import SmartOSError


def _needs_rauc() -> None:
    if not shutil.which("rauc") or not shutil.which("mksquashfs"):
        pytest.skip("rauc and squashfs-tools are installed by ./build.py test (as root)")


@pytest.fixture(scope="module")
def signing(tmp_path_factory: pytest.TempPathFactory) -> keys.Keys:
    return keys.init(tmp_path_factory.mktemp("keys") / "k", "SmartOS test")


def test_keys_are_private_and_chain_to_the_ca_for_code_signing(signing: keys.Keys) -> None:
    assert signing.ca_key.stat().st_mode & 0o777 == 0o600
    assert signing.signing_key.stat().st_mode & 0o777 == 0o600
    verify = subprocess.run(["openssl", "verify", "-CAfile", signing.ca_cert,
                             signing.signing_cert], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr
    text = subprocess.run(["openssl", "x509", "-in", signing.signing_cert, "-noout", "-ext",
                           "extendedKeyUsage"], capture_output=True, text=True, check=True).stdout
    assert "Code Signing" in text


def test_an_existing_ca_is_never_replaced_but_the_signing_key_can_be_renewed(signing: keys.Keys) -> None:
    ca = signing.ca_cert.read_bytes()
    old_cert = signing.signing_cert.read_bytes()
    with pytest.raises(SmartOSError, match="already exists"):
        keys.init(signing.directory, "SmartOS test")
    keys.init(signing.directory, "SmartOS test", renew_signing=True)
    assert signing.ca_cert.read_bytes() == ca
    assert signing.signing_cert.read_bytes() != old_cert
    assert not list(signing.directory.glob("*.tmp"))


def test_renewing_without_a_ca_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(SmartOSError, match="no CA"):
        keys.init(tmp_path / "none", "x", renew_signing=True)


def _bundle(signing: keys.Keys, tmp_path: Path, version: str) -> Path:
    image = tmp_path / f"slot-{version}.ext4"
    content = tmp_path / f"content-{version}"
    content.mkdir(exist_ok=True)
    (content / "random").write_bytes(os.urandom(256 << 10))  # squashfs needs more than one block
    with image.open("wb") as fh:
        fh.truncate(8 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", content, image], check=True)
    out = tmp_path / f"b-{version}.raucb"
    work = tmp_path / f"work-{version}"
    work.mkdir(exist_ok=True)
    release.make_bundle(image, out, board=Board.X86_64, version=version, description="test",
                        build_id="b1", keys=signing, workdir=work, logfile=tmp_path / "log")
    return out


def test_a_bundle_is_signed_verity_adaptive_and_its_manifest_hash_is_rauc_s(
        signing: keys.Keys, tmp_path: Path) -> None:
    _needs_rauc()
    bundle = _bundle(signing, tmp_path, "1.2.0")
    conf = tmp_path / "conf"
    conf.write_text(f"[system]\ncompatible=smartos-x86-64\nbootloader=noop\n[keyring]\n"
                    f"path={signing.ca_cert}\ncheck-purpose=codesign\n")
    info = json.loads(subprocess.run(["rauc", "-c", conf, "info", "--output-format=json", bundle],
                                     capture_output=True, text=True, check=True).stdout)
    assert info["compatible"] == "smartos-x86-64" and info["version"] == "1.2.0"
    assert info["images"][0]["rootfs"]["adaptive"] == ["block-hash-index"]
    digest = release.manifest_hash(bundle, board=Board.X86_64, keys=signing, workdir=tmp_path,
                                   logfile=tmp_path / "log")
    assert len(digest) == 64
    # a CA the bundle was not signed by: refused
    other = keys.init(tmp_path / "other", "Someone else")
    conf.write_text(conf.read_text().replace(str(signing.ca_cert), str(other.ca_cert)))
    refused = subprocess.run(["rauc", "-c", conf, "info", bundle], capture_output=True, text=True)
    assert refused.returncode != 0 and "signature" in refused.stderr.lower()


def test_publish_lists_releases_newest_first_and_refuses_a_version_twice(
        signing: keys.Keys, tmp_path: Path) -> None:
    _needs_rauc()
    tree = tmp_path / "tree"
    for version in ("1.0.0", "1.10.0", "1.2.0"):
        release.publish(_bundle(signing, tmp_path, version), tree, channel=Channel.BETA,
                        board=Board.X86_64, version=version,
                        min_version="1.0.0" if version != "1.0.0" else "",
                        notes=f"notes {version}", homeassistant="2026.2.3", build_id="b", m_hash="0" * 64,
                        keys=signing)
    index = json.loads((tree / "beta/x86-64/index.json").read_text())
    assert index["sequence"] == 3  # one per publish
    assert [r["version"] for r in index["releases"]] == ["1.10.0", "1.2.0", "1.0.0"]
    assert index["compatible"] == "smartos-x86-64"
    first = index["releases"][0]
    assert (tree / "beta/x86-64" / first["file"]).stat().st_size == first["size"]
    assert first["sha256"] == release.file_sha256(tree / "beta/x86-64" / first["file"])
    assert not list(tree.rglob(".*.tmp"))
    with pytest.raises(SmartOSError, match="immutable"):
        release.publish(_bundle(signing, tmp_path, "1.2.0"), tree, channel=Channel.BETA,
                        board=Board.X86_64, version="1.2.0", min_version="", notes="",
                        homeassistant="", build_id="b", m_hash="0" * 64, keys=signing)


def test_the_published_index_is_signed_for_the_device_and_a_refresh_extends_it(
        signing: keys.Keys, tmp_path: Path) -> None:
    """What `smartos release` writes, the device's own check accepts (real openssl both sides);
    a format 1 tree (before signing) is upgraded by the next publish."""
    import datetime

    from smartos_cli import channel_index, update

    tree = tmp_path / "tree"
    index_file = release.index_path(tree, Channel.STABLE, Board.X86_64)
    index_file.parent.mkdir(parents=True)
    index_file.write_text(json.dumps({"format": 1, "releases": [
        {"version": "1.0.0", "file": "smartos-1.0.0-x86-64.raucb", "size": 1, "sha256": "a" * 64,
         "manifest_hash": "b" * 64}]}))
    bundle = tmp_path / "b.raucb"
    bundle.write_bytes(b"not really a bundle")
    release.publish(bundle, tree, channel=Channel.STABLE, board=Board.X86_64, version="1.1.0",
                    min_version="", notes="", homeassistant="", build_id="b", m_hash="c" * 64,
                    keys=signing, valid_days=7)
    sig = index_file.with_name("index.json.sig")
    now = datetime.datetime.now(datetime.UTC)
    url = "http://mirror.local/stable/x86-64/index.json"

    def read(at: datetime.datetime) -> channel_index.Index:
        return update.read_index(index_file.read_bytes(), sig.read_bytes(), url,
                                 compatible="smartos-x86-64", seen=1, at=at, keyring=signing.ca_cert)

    first = read(now)
    assert [r.version for r in first.releases] == ["1.1.0", "1.0.0"] and first.sequence == 1
    with pytest.raises(update.CtlError, match="expired"):
        read(now + datetime.timedelta(days=8))
    refreshed = release.refresh(tree, channel=Channel.STABLE, board=Board.X86_64, keys=signing,
                                valid_days=30)
    assert refreshed.sequence == 2 and refreshed.releases == first.releases
    assert read(now + datetime.timedelta(days=8)).sequence == 2
    assert not list(tree.rglob(".*.tmp"))


@pytest.mark.parametrize(("version", "min_version", "message"), [
    ("banana", "", "not a version"),
    ("1.0.0", "2.0.0", "newer than the release"),
])
def test_bad_versions_are_refused_before_a_build(version: str, min_version: str, message: str) -> None:
    with pytest.raises(SmartOSError, match=message):
        release.check_versions(version, min_version)


def test_release_without_keys_names_the_command_that_makes_them(tmp_path: Path) -> None:
    with pytest.raises(SmartOSError, match="smartos keys init"):
        keys.Keys(tmp_path / "none").require_signing()


def test_the_builder_and_the_ota_role_agree_on_the_compatible_string() -> None:
    from tests.conftest import REPO

    default = (REPO / "roles/ota/defaults/main.yml").read_text()
    assert "ota__compatible: \"smartos-{{ base__board | default('x86-64') }}\"" in default
    assert release.compatible(Board.RPI4) == "smartos-rpi4"
