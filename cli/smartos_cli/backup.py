"""Encrypted backups of Home Assistant's configuration and SmartOS's own settings.

A backup is an OpenPGP file (`gpg --symmetric`, AES-256, integrity-protected) holding a
gzip-compressed tar: MANIFEST.json first (format, when, which device and versions, and the
SHA-256 of every file), then the trees below. Any computer can open it with the password:
`gpg -d smartos-kitchen-20261125-101500.tar.gz.gpg | tar xz`.

SQLite databases (Home Assistant's recorder) are copied with SQLite's online backup API, so a
backup taken while Home Assistant runs holds a consistent database.

Restore decrypts and checks everything first (the password, OpenPGP's integrity check, every
file's checksum); only then does it stop Home Assistant, move the current trees aside, put the
restored ones in place and start Home Assistant again. The previous trees are deleted only once
that worked; on any failure they are put back.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import socket
import sqlite3
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from .errors import CtlError, Exit
from .run import run

FORMAT = 1
SUFFIX = ".tar.gz.gpg"
# Trees below the data partition, by their name in the archive.
TREES = ("homeassistant", "smartos", "network", "wireguard", "wifi")
# Not part of a backup: this device's identity and caches that rebuild themselves.
SKIP_NAMES = {"machine-id", "venv-id", "__pycache__", "backups", "tts", "deps", ".uv-cache"}
SKIP_SUFFIXES = (".db-shm", ".db-wal", ".log", ".log.1", ".log.old", ".log.fault")
PRIVATE = ("wireguard", "wifi")  # keys and Wi-Fi passwords: root only
MIN_PASSWORD = 8


@dataclass(frozen=True)
class BackupInfo:
    name: str
    path: str
    size_bytes: int
    created: str


@dataclass(frozen=True)
class Hooks:
    """What restore does around the swap (on the device: stop Home Assistant; start it, reload
    the firewall and network) and who owns each restored tree (uid, gid)."""

    stop: Callable[[], None]
    start: Callable[[], None]
    owners: dict[str, tuple[int, int]]


def _skipped(rel: PurePosixPath) -> bool:
    return any(part in SKIP_NAMES for part in rel.parts) or rel.name.endswith(SKIP_SUFFIXES)


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise CtlError(f"password: expected at least {MIN_PASSWORD} characters")


@contextmanager
def _gpg_home() -> Iterator[Path]:
    """A throw-away GnuPG home: nothing of the backup's password stays in an agent."""
    home = Path(tempfile.mkdtemp(prefix="smartos-gpg-"))
    try:
        yield home
    finally:
        run(["gpgconf", "--homedir", home, "--kill", "gpg-agent"], check=False)
        shutil.rmtree(home, ignore_errors=True)


def _gpg(home: Path, password: str, *args: str | Path) -> None:
    """gpg in batch mode with the password on a pipe (never on the command line)."""
    read_fd, write_fd = os.pipe()
    os.write(write_fd, password.encode() + b"\n")
    os.close(write_fd)
    try:
        result = run(["gpg", "--homedir", home, "--batch", "--quiet", "--no-tty", "--pinentry-mode",
                      "loopback", "--passphrase-fd", str(read_fd), *args], check=False,
                     pass_fds=(read_fd,))
    finally:
        os.close(read_fd)
    if result.returncode != 0:
        text = result.stderr.strip()
        if "Bad session key" in text or "bad passphrase" in text.lower():
            raise CtlError("wrong password for this backup; nothing changed")
        last = text.splitlines()[-1] if text else "gpg failed"
        raise CtlError(f"the backup is damaged or not a SmartOS backup ({last}); nothing changed")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _files(data: Path) -> Iterator[tuple[Path, PurePosixPath]]:
    for tree in TREES:
        root = data / tree
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*")):
            rel = PurePosixPath(tree) / path.relative_to(root).as_posix()
            if _skipped(rel) or path.is_dir() and not path.is_symlink():
                continue
            if path.is_file() or path.is_symlink():
                yield path, rel


def _snapshot(path: Path, work: Path) -> Path:
    """A consistent copy of an SQLite database that may be in use; other files as they are."""
    if path.suffix != ".db" or path.is_symlink():
        return path
    copy = work / f"{len(list(work.iterdir()))}.db"
    try:
        src = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        dst = sqlite3.connect(copy)
        with dst:
            src.backup(dst)
        src.close()
        dst.close()
        return copy
    except sqlite3.DatabaseError:
        copy.unlink(missing_ok=True)
        return path  # not a database after all: copied as it is


def _space_needed(data: Path) -> int:
    return sum(p.stat().st_size for p, _ in _files(data) if p.is_file() and not p.is_symlink())


def create(data: Path, target_dir: Path, password: str, facts: dict[str, Any] | None = None,
           now: float | None = None) -> BackupInfo:
    _check_password(password)
    if not target_dir.is_dir():
        raise CtlError(f"--to: {target_dir} is not a directory", hint="mount the USB stick first")
    needed = _space_needed(data)
    # the plain tar (work) and the encrypted file side by side, at worst uncompressed
    for where in {target_dir, data}:
        free = shutil.disk_usage(where).free
        if free < needed * 2 + (64 << 20):
            raise CtlError(f"not enough space on {where}: {free >> 20} MiB free, about "
                           f"{(needed * 2) >> 20} MiB needed", code=Exit.FAILED)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))
    name = f"smartos-{socket.gethostname()}-{stamp}{SUFFIX}"
    final = target_dir / name
    if final.exists():
        raise CtlError(f"{final} exists already", hint="wait a second and try again")
    work = Path(tempfile.mkdtemp(prefix=".backup-", dir=data))
    try:
        os.chmod(work, 0o700)
        plain = work / "backup.tar.gz"
        snapshots = work / "db"
        snapshots.mkdir()
        members = [(_snapshot(path, snapshots), rel) for path, rel in _files(data)]
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        manifest = {"format": FORMAT, "created": created,
                    "hostname": socket.gethostname(), **(facts or {}),
                    "files": {str(rel): _sha256(src) for src, rel in members if not src.is_symlink()}}
        with tarfile.open(plain, "w:gz", compresslevel=6, format=tarfile.PAX_FORMAT) as tar:
            blob = json.dumps(manifest, indent=2).encode()
            info = tarfile.TarInfo("MANIFEST.json")
            info.size, info.mtime, info.mode = len(blob), int(time.time()), 0o600
            tar.addfile(info, io.BytesIO(blob))
            for src, rel in members:
                info = _as_original(tar.gettarinfo(src, arcname=str(rel)), data / rel)
                if info.isreg():
                    with src.open("rb") as fh:
                        tar.addfile(info, fh)
                else:
                    tar.addfile(info)
        partial = target_dir / f".{name}.partial"
        with _gpg_home() as home:
            _gpg(home, password, "--symmetric", "--cipher-algo", "AES256", "--s2k-digest-algo",
                 "SHA512", "--s2k-count", "65011712", "--compress-algo", "none", "--output", partial,
                 plain)
        os.chmod(partial, 0o640)
        os.replace(partial, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        for leftover in target_dir.glob(f".{name}.partial"):
            leftover.unlink()
    return _info(final)


def _as_original(ti: tarfile.TarInfo, original: Path) -> tarfile.TarInfo:
    """A database snapshot goes in with the original's owner and mode."""
    st = original.lstat()
    ti.uid, ti.gid, ti.mode = st.st_uid, st.st_gid, st.st_mode & 0o7777
    ti.uname = ti.gname = ""
    return ti


def _info(path: Path) -> BackupInfo:
    st = path.stat()
    return BackupInfo(path.name, str(path), st.st_size,
                      time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(st.st_mtime)))


def list_backups(target_dir: Path) -> list[BackupInfo]:
    if not target_dir.is_dir():
        return []
    return sorted((_info(p) for p in target_dir.glob(f"smartos-*{SUFFIX}")),
                  key=lambda b: b.created, reverse=True)


def find(target_dir: Path, name: str) -> Path:
    """A backup by its name (in target_dir) or by path."""
    candidate = Path(name) if "/" in name else target_dir / name
    if not candidate.is_file() or not candidate.name.endswith(SUFFIX):
        known = ", ".join(b.name for b in list_backups(target_dir)[:5]) or "none yet"
        raise CtlError(f"no backup {name!r}", hint=f"smartosctl backup list (newest: {known})")
    return candidate


def delete(target_dir: Path, name: str) -> BackupInfo:
    path = find(target_dir, name)
    info = _info(path)
    path.unlink()
    return info


def _verified(path: Path, password: str, work: Path) -> tuple[dict[str, Any], Path]:
    """Decrypt to work, then check the manifest and every file's checksum; raise if anything is
    off."""
    plain = work / "backup.tar.gz"
    with _gpg_home() as home:
        _gpg(home, password, "--decrypt", "--output", plain, path)
    extracted = work / "extracted"
    extracted.mkdir()
    try:
        with tarfile.open(plain, "r:gz") as tar:
            first = tar.next()
            if first is None or first.name != "MANIFEST.json":
                raise CtlError("not a SmartOS backup (no manifest); nothing changed")
            manifest = json.load(tar.extractfile(first))  # type: ignore[arg-type]
            if manifest.get("format") != FORMAT:
                raise CtlError(f"backup format {manifest.get('format')} is not one this SmartOS "
                               f"reads ({FORMAT}); nothing changed")
            for member in tar:
                if member is first:
                    continue
                top = PurePosixPath(member.name).parts[0]
                if top not in TREES:
                    raise CtlError(f"unexpected entry {member.name!r} in the backup; nothing changed")
                # "data": no absolute paths, nothing outside, no devices; owners are set below
                tar.extract(member, extracted, filter="data")
    except (tarfile.TarError, EOFError, OSError, json.JSONDecodeError) as exc:
        raise CtlError(f"the backup is damaged ({exc}); nothing changed") from exc
    for rel, digest in manifest["files"].items():
        f = extracted / rel
        if not f.is_file() or _sha256(f) != digest:
            raise CtlError(f"the backup is damaged ({rel} does not match its checksum); "
                           "nothing changed")
    plain.unlink()
    return manifest, extracted


def restore(data: Path, path: Path, password: str, hooks: Hooks) -> dict[str, Any]:
    _check_password(password)
    work = Path(tempfile.mkdtemp(prefix=".restore-", dir=data))
    previous = data / ".restore-previous"
    try:
        manifest, extracted = _verified(path, password, work)
        if previous.exists():
            shutil.rmtree(previous)
        previous.mkdir()
        hooks.stop()
        moved: list[str] = []   # trees moved aside
        placed: list[str] = []  # trees put in place from the backup
        kept: list[tuple[Path, Path]] = []
        try:
            for tree in TREES:
                if (data / tree).exists():
                    os.rename(data / tree, previous / tree)
                    moved.append(tree)
                if (extracted / tree).exists():
                    os.rename(extracted / tree, data / tree)
                else:
                    (data / tree).mkdir()
                placed.append(tree)
                kept += _keep_identity(previous / tree, data / tree)
                _own(data / tree, hooks.owners.get(tree, (0, 0)), private=tree in PRIVATE)
            hooks.start()
        except BaseException:
            for old, new in reversed(kept):
                os.rename(new, old)
            for tree in placed:
                shutil.rmtree(data / tree)
            for tree in moved:
                os.rename(previous / tree, data / tree)
            hooks.start()
            raise
        shutil.rmtree(previous)
        return {"restored": path.name, "created": manifest.get("created"),
                "from_host": manifest.get("hostname"), "files": len(manifest["files"])}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _own(tree: Path, owner: tuple[int, int], private: bool) -> None:
    for path in [tree, *tree.rglob("*")]:
        os.lchown(path, *owner)
    os.chmod(tree, 0o700 if private else 0o755)


def _keep_identity(old: Path, new: Path) -> list[tuple[Path, Path]]:
    """This device's identity and caches stay this device's (they are not in a backup); returns
    what moved, to move it back if the restore fails later."""
    moved = []
    if old.is_dir():
        for name in SKIP_NAMES:
            if (old / name).exists() and not (new / name).exists():
                os.rename(old / name, new / name)
                moved.append((old / name, new / name))
    return moved


def as_dict(info: BackupInfo) -> dict[str, Any]:
    return asdict(info)
