"""Releases: a build's root slot as a signed RAUC bundle, published into a channel tree.

The tree is plain files; any static HTTP(S) server that answers Range requests can host it
(devices stream bundles, fetching only the blocks they do not have):

    <tree>/<channel>/<board>/index.json
    <tree>/<channel>/<board>/smartos-<version>-<board>.raucb

index.json lists the channel's releases for one board, newest first: version, file (relative to
the index), size, sha256 of the file, the hash of the bundle's signed manifest (what a device
pins when it streams: the manifest carries the dm-verity root hash, so it stands for every byte),
the oldest version it updates from, and release notes. Releases are immutable: publishing a
version that is already in the channel is refused.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from .config import Board, Channel
from .errors import SmartOSError
from .keys import Keys
from .run import run

INDEX_FORMAT = 1
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
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class Release:
    version: str
    file: str            # relative to the index
    size: int
    sha256: str
    manifest_hash: str
    min_version: str     # the oldest version that may update to this one ("" = any)
    notes: str
    released_at: str
    homeassistant: str
    build_id: str


def index_path(tree: Path, channel: Channel, board: Board) -> Path:
    return tree / channel.value / board.value / "index.json"


def read_index(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        index = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SmartOSError(f"{path}: not valid JSON ({exc})",
                           hint="restore it from a backup of the release tree") from None
    if not isinstance(index, dict) or index.get("format") != INDEX_FORMAT:
        raise SmartOSError(f"{path}: not a SmartOS channel index (format {INDEX_FORMAT})")
    return index


def publish(bundle: Path, tree: Path, *, channel: Channel, board: Board, version: str,
            min_version: str, notes: str, homeassistant: str, build_id: str, m_hash: str) -> Path:
    """Copy bundle into the channel tree and list it in the index, newest version first.

    The bundle lands under its final name before the index names it, and the index is replaced
    by a rename: a device never sees a release whose file is missing or half-copied.
    """
    check_versions(version, min_version)
    index_file = index_path(tree, channel, board)
    index = read_index(index_file)
    releases = [r for r in index.get("releases", []) if isinstance(r, dict)]
    if any(r.get("version") == version for r in releases):
        raise SmartOSError(f"{version} is already released on {channel.value} for {board.value}: "
                           "releases are immutable", hint="build it as a new version (--set version=...)")
    index_file.parent.mkdir(parents=True, exist_ok=True)
    name = f"smartos-{version}-{board.value}.raucb"
    tmp = index_file.parent / f".{name}.tmp"
    shutil.copyfile(bundle, tmp)
    tmp.rename(index_file.parent / name)
    release = Release(
        version=version, file=name, size=bundle.stat().st_size, sha256=file_sha256(bundle),
        manifest_hash=m_hash, min_version=min_version, notes=notes,
        released_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        homeassistant=homeassistant, build_id=build_id)
    releases.append(asdict(release))
    releases.sort(key=lambda r: parse_version(str(r["version"])), reverse=True)
    new_index = {"format": INDEX_FORMAT, "channel": channel.value, "board": board.value,
                 "compatible": compatible(board), "releases": releases}
    index_tmp = index_file.with_name(".index.json.tmp")
    index_tmp.write_text(json.dumps(new_index, indent=2) + "\n")
    index_tmp.rename(index_file)
    return index_file
