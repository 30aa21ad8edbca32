"""Releases: a build's root slot as a signed RAUC bundle, published into a channel tree.

The tree is plain files; any static HTTP(S) server that answers Range requests can host it
(devices stream bundles, fetching only the blocks they do not have):

    <tree>/<channel>/<board>/index.json
    <tree>/<channel>/<board>/index.json.sig
    <tree>/<channel>/<board>/smartos-<version>-<board>.raucb

index.json lists the channel's releases for one board, newest first: version, file (relative to
the index), size, sha256 of the file, the hash of the bundle's signed manifest (what a device
pins when it streams: the manifest carries the dm-verity root hash, so it stands for every byte),
the oldest version it updates from, and release notes; and when it was issued, until when a
device accepts it, and its sequence number (the format: smartos_cli/channel_index.py, shared
with the device). index.json.sig is its detached CMS signature by the release signing key, so
the server needs no trust (a plain http mirror will do). Releases are immutable: publishing a
version that is already in the channel is refused.
"""

from __future__ import annotations

import datetime
import hashlib
import shutil
from pathlib import Path

from packaging.version import InvalidVersion, Version
from smartos_cli import channel_index

from .config import Board, Channel
from .errors import SmartOSError
from .keys import Keys
from .run import run

# 128 KiB blocks (squashfs's default) are the unit a streaming device downloads; xz in blocks
# that small: 427 MiB for the x86-64 root slot, against 461 MiB with zstd -19 and 485 with
# zstd -15 (measured 2026-11-26), and faster to make than zstd -19.
MKSQUASHFS_ARGS = "-comp xz -b 131072"
# `smartos release --fast` (dev channels, tests): zstd level 3, 6 s instead of 96 s (zstd's
# default level 15) for the x86-64 root slot, 536 MiB instead of 466 (measured 2026-11-26)
MKSQUASHFS_FAST_ARGS = "-comp zstd -Xcompression-level 3 -b 131072"


def compatible(board: Board) -> str:
    """The string a board's bundles and its RAUC system.conf share (roles/ota: ota__compatible)."""
    return f"smartos-{board.value}"


def parse_version(text: str, what: str = "version") -> Version:
    try:
        return Version(text)
    except InvalidVersion:
        raise SmartOSError(f"{what}: {text!r} is not a version such as 1.2.0 (PEP 440)") from None


def check_versions(version: str, min_version: str) -> None:
    if min_version and parse_version(min_version, "--min-version") > parse_version(version, "version"):
        raise SmartOSError(f"--min-version {min_version} is newer than the release {version}")
    parse_version(version, "version")


def _host_conf(keys: Keys, workdir: Path, board: Board) -> Path:
    """A system.conf for the host side of rauc: only what bundle and info need (the keyring and
    its purpose check, the same the devices apply)."""
    conf = workdir / "rauc-host.conf"
    conf.write_text(f"[system]\ncompatible={compatible(board)}\nbootloader=noop\n\n"
                    f"[keyring]\npath={keys.ca_cert}\ncheck-purpose=codesign\n")
    return conf


def make_bundle(slot_image: Path, out: Path, *, board: Board, version: str, description: str,
                build_id: str, keys: Keys, workdir: Path, logfile: Path, fast: bool = False) -> None:
    """Pack slot_image (moved, not copied) into a signed verity bundle at out."""
    keys.require_signing()
    content = workdir / "bundle"
    if content.exists():
        shutil.rmtree(content)
    content.mkdir()
    shutil.move(slot_image, content / "rootfs.ext4")
    (content / "manifest.raucm").write_text(
        "[update]\n"
        f"compatible={compatible(board)}\n"
        f"version={version}\n"
        f"description={description}\n"
        f"build={build_id}\n\n"
        "[bundle]\nformat=verity\n\n"
        # block-hash-index: the device looks up each 4 KiB block of the new root filesystem in
        # its own slots first and fetches only the blocks it lacks (a patch release downloads a
        # small part of the bundle)
        "[image.rootfs]\nfilename=rootfs.ext4\nadaptive=block-hash-index\n")
    out.unlink(missing_ok=True)
    run(["rauc", "-c", _host_conf(keys, workdir, board), "bundle", "--cert", keys.signing_cert,
         "--key", keys.signing_key, "--keyring", keys.ca_cert,
         f"--mksquashfs-args={MKSQUASHFS_FAST_ARGS if fast else MKSQUASHFS_ARGS}",
         content, out], logfile=logfile)
    shutil.rmtree(content)


def manifest_hash(bundle: Path, *, board: Board, keys: Keys, workdir: Path, logfile: Path) -> str:
    """SHA-256 of the bundle's signed manifest, as RAUC computes it (its require-manifest-hash
    install option compares against this)."""
    sig = workdir / "bundle.sig"
    manifest = workdir / "bundle.manifest"
    sig.unlink(missing_ok=True)
    run(["rauc", "-c", _host_conf(keys, workdir, board), "extract-signature", bundle, sig],
        logfile=logfile)
    # -noverify: only unpacking here; `rauc bundle` verified the signature against the keyring
    run(["openssl", "cms", "-verify", "-noverify", "-binary", "-inform", "DER", "-in", sig,
         "-out", manifest], logfile=logfile)
    digest = hashlib.sha256(manifest.read_bytes()).hexdigest()
    sig.unlink()
    manifest.unlink()
    return digest


def file_sha256(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def index_path(tree: Path, channel: Channel, board: Board) -> Path:
    return tree / channel.value / board.value / "index.json"


def read_index(path: Path) -> channel_index.Index | None:
    """The channel's index as published (None if nothing is), unsigned format 1 included: its
    next publish or refresh upgrades it."""
    if not path.exists():
        return None
    try:
        return channel_index.parse(path.read_bytes(), legacy=True)
    except channel_index.BadIndex as exc:
        raise SmartOSError(f"{path}: {exc}", hint="restore it from a backup of the release tree") from None


def sign_index(index: channel_index.Index, index_file: Path, keys: Keys) -> None:
    """Write index_file and its detached signature (index.json.sig, DER CMS, by the signing key).

    Both are written beside their final names and renamed, the signature first: a device that
    reads them in between sees a signature that does not match and tries again the next day."""
    keys.require_signing()
    index_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = index_file.with_name(f".{index_file.name}.tmp")
    sig = index_file.with_name(index_file.name + channel_index.SIGNATURE_SUFFIX)
    sig_tmp = sig.with_name(f".{sig.name}.tmp")
    tmp.write_text(index.to_json())
    run(["openssl", "cms", "-sign", "-binary", "-md", "sha256", "-in", tmp, "-signer",
         keys.signing_cert, "-inkey", keys.signing_key, "-outform", "DER", "-out", sig_tmp],
        capture=True)
    sig_tmp.rename(sig)
    tmp.rename(index_file)


def _reissue(previous: channel_index.Index | None, releases: list[channel_index.Entry], *,
             channel: Channel, board: Board, valid_days: int) -> channel_index.Index:
    releases = sorted(releases, key=lambda r: parse_version(r.version), reverse=True)
    try:
        return channel_index.issue(channel=channel.value, board=board.value,
                                   compatible=compatible(board), releases=releases,
                                   previous=previous.sequence if previous else 0,
                                   valid_days=valid_days, at=datetime.datetime.now(datetime.UTC))
    except channel_index.BadIndex as exc:
        raise SmartOSError(f"--valid-days: {exc}") from None


def publish(bundle: Path, tree: Path, *, channel: Channel, board: Board, version: str,
            min_version: str, notes: str, homeassistant: str, build_id: str, m_hash: str,
            keys: Keys, valid_days: int = channel_index.VALIDITY_DAYS) -> Path:
    """Copy bundle into the channel tree and list it in the index (newest version first), signed
    and valid for valid_days.

    The bundle lands under its final name before the index names it, and the index is replaced
    by a rename: a device never sees a release whose file is missing or half-copied.
    """
    check_versions(version, min_version)
    keys.require_signing()
    index_file = index_path(tree, channel, board)
    previous = read_index(index_file)
    releases = list(previous.releases) if previous else []
    if any(r.version == version for r in releases):
        raise SmartOSError(f"{version} is already released on {channel.value} for {board.value}: "
                           "releases are immutable", hint="build it as a new version (--set version=...)")
    index_file.parent.mkdir(parents=True, exist_ok=True)
    name = f"smartos-{version}-{board.value}.raucb"
    tmp = index_file.parent / f".{name}.tmp"
    shutil.copyfile(bundle, tmp)
    tmp.rename(index_file.parent / name)
    releases.append(channel_index.Entry(
        version=version, file=name, size=bundle.stat().st_size, sha256=file_sha256(bundle),
        manifest_hash=m_hash, min_version=min_version, notes=notes,
        released_at=channel_index.timestamp(datetime.datetime.now(datetime.UTC)),
        homeassistant=homeassistant, build_id=build_id))
    sign_index(_reissue(previous, releases, channel=channel, board=board, valid_days=valid_days),
               index_file, keys)
    return index_file


def refresh(tree: Path, *, channel: Channel, board: Board, keys: Keys,
            valid_days: int = channel_index.VALIDITY_DAYS) -> channel_index.Index:
    """Re-sign the channel's unchanged releases with a new sequence number and expiry (run it
    within every validity period, or devices call the channel stale and install nothing)."""
    index_file = index_path(tree, channel, board)
    previous = read_index(index_file)
    if previous is None:
        raise SmartOSError(f"{index_file}: nothing is published there to refresh",
                           hint="check --to, --channel and --board")
    index = _reissue(previous, list(previous.releases), channel=channel, board=board,
                     valid_days=valid_days)
    sign_index(index, index_file, keys)
    return index
