"""Encrypted backups of Home Assistant's configuration and SmartOS's own settings.

A backup is an OpenPGP file (`gpg --symmetric`, AES-256, integrity-protected) holding a
gzip-compressed tar: MANIFEST.json first (format, when, which device and versions, and the
SHA-256 of every file), then the trees below. Any computer can open it with the password:
`gpg -d smartos-kitchen-20261125-101500.tar.gz.gpg | tar xz`. The agent writes backups only
into /data/backups (root, group smartos-admin, 0750); `smartosctl backup create --to DIR` copies
the finished file out as the admin. Without a password a backup is encrypted with the device's
backup key (/data/smartos/backup.key, made once; `smartosctl backup key` shows it).

SQLite databases (Home Assistant's recorder) are copied with SQLite's online backup API, so a
backup taken while Home Assistant runs holds a consistent database.

Restore takes a backup from /data/backups by name. Whoever knows the password can make an
archive, so its content is not trusted: it is decrypted and unpacked within size limits into a
root-only directory (regular files and directories only, no `..`, no absolute names), every
file's checksum is checked, and of SmartOS's trees only known settings files are taken, each
checked by the parser the live code uses; one that fails stops the restore. What SmartOS
renders from settings (wg0.conf, wpa_supplicant's file, the firewall's rule files) is rendered
again, never taken from the archive; this device's network configuration (/data/network), its
identity, update record and backup key stay as they are. Only then does restore stop Home
Assistant, move the current trees aside, put the restored ones in place, load the rendered
firewall rules and start Home Assistant again. The previous trees are deleted only once that
worked; on any failure they are put back.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import socket
import sqlite3
import stat
import tarfile
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from .errors import CtlError, Exit
from .files import write_atomically
from .paths import Paths
from .run import run

FORMAT = 1
SUFFIX = ".tar.gz.gpg"
NAME = re.compile(r"smartos-[A-Za-z0-9][A-Za-z0-9.-]*\.tar\.gz\.gpg")
# Trees below the data partition, by their name in the archive.
TREES = ("homeassistant", "smartos", "network", "wireguard", "wifi")
# What a restore swaps in: /data/network (networkd's files) stays this device's own.
RESTORED_TREES = ("homeassistant", "smartos", "wireguard", "wifi")
# Not part of a backup: this device's identity and caches that rebuild themselves.
SKIP_NAMES = {"machine-id", "venv-id", "__pycache__", "backups", "tts", "deps", ".uv-cache"}
SKIP_SUFFIXES = (".db-shm", ".db-wal", ".log", ".log.1", ".log.old", ".log.fault")
# This device's own, neither backed up nor replaced: the key of its backups and its record of
# update attempts (slots and boots of this machine).
DEVICE_OWN = ("smartos/backup.key", "smartos/update-state.json")
# Rendered from settings after a restore, never taken from an archive.
GENERATED = ("wireguard/wg0.conf", "wifi/wpa_supplicant-wlan0.conf")
PRIVATE = ("wireguard", "wifi")  # keys and Wi-Fi passwords: root only
MIN_PASSWORD = 8
KEY_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read off a screen


@dataclass(frozen=True)
class Limits:
    """What a restore takes at most: the archive, its content unpacked, its entries."""

    archive_bytes: int = 8 << 30
    unpacked_bytes: int = 16 << 30
    members: int = 500_000


@dataclass(frozen=True)
class BackupInfo:
    name: str
    path: str
    size_bytes: int
    created: str


@dataclass(frozen=True)
class Hooks:
    """What restore does around the swap (on the device: stop Home Assistant; load the firewall,
    apply the hostname, network and VPN, start Home Assistant) and who owns each restored tree
    (uid, gid)."""

    stop: Callable[[], None]
    start: Callable[[], None]
    owners: dict[str, tuple[int, int]]


def _skipped(rel: PurePosixPath) -> bool:
    return any(part in SKIP_NAMES for part in rel.parts) or rel.name.endswith(SKIP_SUFFIXES) \
        or str(rel) in DEVICE_OWN


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise CtlError(f"password: expected at least {MIN_PASSWORD} characters")


def _create_new(path: Path, mode: int) -> int:
    """A new file, never through a link and never over an existing one."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)


def device_key(paths: Paths) -> str:
    """The device's backup key: made once (random, 120 bits), kept root-only."""
    path = paths.backup_key
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        paths.state.mkdir(parents=True, exist_ok=True)
        key = "-".join("".join(secrets.choice(KEY_ALPHABET) for _ in range(4)) for _ in range(6))
        fd = _create_new(path, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return key
    with os.fdopen(fd) as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise CtlError(f"{path} is not a regular file", code=Exit.FAILED)
        key = fh.read().strip()
    _check_password(key)
    return key


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
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _files(data: Path) -> Iterator[tuple[Path, PurePosixPath]]:
    """Regular files of the trees; symbolic links are left out (a restore takes none), and
    directories are not followed through a link."""
    for tree in TREES:
        root = data / tree
        if root.is_symlink() or not root.is_dir():
            continue
        for where, dirs, names in os.walk(root):
            dirs.sort()
            for name in sorted(names):
                path = Path(where) / name
                rel = PurePosixPath(tree) / path.relative_to(root).as_posix()
                if not _skipped(rel) and stat.S_ISREG(path.lstat().st_mode):
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
    return sum(p.lstat().st_size for p, _ in _files(data))


def backup_dir(paths: Paths, group: int | None = None) -> Path:
    """/data/backups, root's with the admin's group (who lists and copies them), 0750."""
    where = paths.backups
    try:
        where.mkdir(mode=0o750)
    except FileExistsError:
        if not stat.S_ISDIR(where.lstat().st_mode):
            raise CtlError(f"{where} is not a directory", code=Exit.FAILED) from None
    os.chown(where, 0, 0 if group is None else group, follow_symlinks=False)
    os.chmod(where, 0o750, follow_symlinks=False)
    return where


def create(paths: Paths, password: str = "", facts: dict[str, Any] | None = None,
           now: float | None = None, group: int | None = None) -> BackupInfo:
    """A backup in /data/backups, encrypted with password (or, if "", the device's key)."""
    data = paths.data
    password = password or device_key(paths)
    _check_password(password)
    target_dir = backup_dir(paths, group)
    needed = _space_needed(data)
    # the plain tar (work) and the encrypted file side by side, at worst uncompressed
    free = shutil.disk_usage(data).free
    if free < needed * 2 + (64 << 20):
        raise CtlError(f"not enough space on {data}: {free >> 20} MiB free, about "
                       f"{(needed * 2) >> 20} MiB needed", code=Exit.FAILED)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))
    name = f"smartos-{socket.gethostname()}-{stamp}{SUFFIX}"
    final = target_dir / name
    if final.exists() or final.is_symlink():
        raise CtlError(f"{final} exists already", hint="wait a second and try again")
    work = Path(tempfile.mkdtemp(prefix=".backup-", dir=data))  # root's, 0700
    try:
        plain = work / "backup.tar.gz"
        snapshots = work / "db"
        snapshots.mkdir()
        members = [(_snapshot(path, snapshots), rel) for path, rel in _files(data)]
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        manifest = {"format": FORMAT, "created": created,
                    "hostname": socket.gethostname(), **(facts or {}),
                    "files": {str(rel): _sha256(src) for src, rel in members}}
        with tarfile.open(plain, "w:gz", compresslevel=6, format=tarfile.PAX_FORMAT) as tar:
            blob = json.dumps(manifest, indent=2).encode()
            info = tarfile.TarInfo("MANIFEST.json")
            info.size, info.mtime, info.mode = len(blob), int(time.time()), 0o600
            tar.addfile(info, io.BytesIO(blob))
            for src, rel in members:
                fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                with os.fdopen(fd, "rb") as fh:
                    info = _as_original(tar.gettarinfo(arcname=str(rel), fileobj=fh), data / rel)
                    tar.addfile(info, fh)
        partial = work / f"{name}.partial"
        group_id = target_dir.stat().st_gid
        fd = _create_new(partial, 0o600)  # before gpg writes a byte of it
        try:
            with _gpg_home() as home:
                _gpg(home, password, "--yes", "--symmetric", "--cipher-algo", "AES256",
                     "--s2k-digest-algo", "SHA512", "--s2k-count", "65011712", "--compress-algo",
                     "none", "--output", partial, plain)
            if os.fstat(fd).st_ino != partial.lstat().st_ino:  # gpg wrote into this very file
                raise CtlError("gpg replaced the backup's file instead of writing it", code=Exit.FAILED)
            os.fchown(fd, 0, group_id)
            os.fchmod(fd, 0o640)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.link(partial, final)  # into place; never over another file
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return _info(final)


def copy_to(source: Path, target_dir: Path) -> BackupInfo:
    """Copy a finished backup to target_dir (a USB stick) as whoever calls it (smartosctl runs as
    the admin), into a new file of its own (0600)."""
    if not target_dir.is_dir():
        raise CtlError(f"--to: {target_dir} is not a directory", hint="mount the USB stick first")
    size = source.stat().st_size
    free = shutil.disk_usage(target_dir).free
    if free < size:
        raise CtlError(f"not enough space on {target_dir}: {free >> 20} MiB free, "
                       f"{size >> 20} MiB needed", code=Exit.FAILED)
    final = target_dir / source.name
    try:
        out = _create_new(final, 0o600)
    except FileExistsError:
        raise CtlError(f"{final} exists already") from None
    try:
        with open(source, "rb") as src, os.fdopen(out, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
            dst.flush()
            os.fsync(dst.fileno())
    except BaseException:
        final.unlink(missing_ok=True)
        raise
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
    return sorted((_info(p) for p in target_dir.glob(f"smartos-*{SUFFIX}")
                   if NAME.fullmatch(p.name) and p.is_file() and not p.is_symlink()),
                  key=lambda b: b.created, reverse=True)


def find(target_dir: Path, name: str) -> Path:
    """A backup in target_dir by its name. The error lists no other backup: whoever asks may
    not be the admin."""
    if not NAME.fullmatch(name):
        raise CtlError(f"no backup {name!r}: expected a name from `smartosctl backup list` "
                       f"(smartos-...{SUFFIX}), not a path",
                       hint=f"a backup elsewhere (a USB stick): sudo cp FILE {target_dir}/ first")
    candidate = target_dir / name
    try:
        is_file = stat.S_ISREG(candidate.lstat().st_mode)
    except FileNotFoundError:
        is_file = False
    if not is_file:
        raise CtlError(f"no backup {name!r}", hint="smartosctl backup list")
    return candidate


def delete(target_dir: Path, name: str) -> BackupInfo:
    path = find(target_dir, name)
    info = _info(path)
    path.unlink()
    return info


# -- restore ------------------------------------------------------------------------------------

class _Capped(io.RawIOBase):
    """A reader that refuses to give more than limit bytes (a gzip bomb stops here)."""

    def __init__(self, inner: gzip.GzipFile, limit: int) -> None:
        self.inner, self.limit, self.count = inner, limit, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        chunk = self.inner.read(len(buffer))
        self.count += len(chunk)
        if self.count > self.limit:
            raise CtlError(f"the backup unpacks to more than {_size(self.limit)}, the most a "
                           "restore takes; nothing changed")
        buffer[:len(chunk)] = chunk
        return len(chunk)


def _size(n: int) -> str:
    return f"{n >> 30} GiB" if n >= 1 << 30 else f"{n >> 20} MiB" if n >= 1 << 20 else f"{n} bytes"


def _member_path(member: tarfile.TarInfo) -> PurePosixPath:
    parts = member.name.split("/")
    if member.name.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\0" in member.name:
        raise CtlError(f"the backup holds an entry named {member.name!r} (absolute, empty or with "
                       "'..'); nothing changed")
    if parts[0] not in TREES:
        raise CtlError(f"unexpected entry {member.name!r} in the backup; nothing changed")
    if not (member.type in (tarfile.REGTYPE, tarfile.AREGTYPE) or member.isdir()):
        kind = "a link" if member.issym() or member.islnk() else "not a file or directory"
        raise CtlError(f"the backup holds {member.name!r}, {kind}: a restore takes only files and "
                       "directories; nothing changed")
    return PurePosixPath(*parts)


def _left_out(rel: PurePosixPath) -> str | None:
    """Why a file of the archive is not restored (None: it is)."""
    key = str(rel)
    if rel.parts[0] == "homeassistant":
        return None
    if key in SETTINGS:
        return None
    if rel.parts[0] == "network":
        return "this device's network configuration is kept"
    if key in GENERATED:
        return "rendered again from the restored settings"
    if key in DEVICE_OWN or _skipped(rel):
        return "this device's own"
    return "not a settings file SmartOS restores"


def _parse_key(text: str, where: str) -> object:
    from .vpn import check_key

    return check_key(text.strip(), where)


def _parsers() -> dict[str, Callable[[str, str], object]]:
    from . import firewall, network, update, vpn

    return {"smartos/firewall.json": firewall.parse_rules, "smartos/vpn.json": vpn.parse_settings,
            "smartos/update.json": update.parse_owner_settings, "smartos/hostname": network.parse_hostname,
            "wireguard/server.key": _parse_key, "wifi/wifi.json": network.parse_wifi}


SETTINGS = ("smartos/firewall.json", "smartos/vpn.json", "smartos/update.json", "smartos/hostname",
            "wireguard/server.key", "wifi/wifi.json")


def _blocks(src: IO[bytes]) -> Iterator[bytes]:
    while block := src.read(1 << 20):
        yield block


@dataclass(frozen=True)
class _Unpacked:
    manifest: dict[str, Any]
    root: Path
    left_out: dict[str, str]  # archive name: why


def _unpack(plain: Path, extracted: Path, limits: Limits) -> _Unpacked:
    """Read the tar as a stream (within limits), write what a restore takes below extracted and
    check every file against the manifest."""
    seen: dict[str, str] = {}
    left_out: dict[str, str] = {}
    dir_modes: dict[Path, int] = {}
    total = count = 0
    with gzip.open(plain, "rb") as gz, tarfile.open(
            fileobj=io.BufferedReader(_Capped(gz, limits.unpacked_bytes)), mode="r|") as tar:
        first = tar.next()
        if first is None or first.name != "MANIFEST.json" or not first.isreg() or first.size > 64 << 20:
            raise CtlError("not a SmartOS backup (no manifest); nothing changed")
        manifest = json.load(tar.extractfile(first))  # type: ignore[arg-type]
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            got = manifest.get("format") if isinstance(manifest, dict) else None
            raise CtlError(f"backup format {got} is not one this SmartOS reads ({FORMAT}); "
                           "nothing changed")
        files = manifest.get("files")
        if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
            raise CtlError("the backup's manifest lists no files; nothing changed")
        for member in tar:
            if member is first:
                continue
            count += 1
            total += max(member.size, 0)
            if count > limits.members:
                raise CtlError(f"the backup holds more than {limits.members} entries, the most a "
                               "restore takes; nothing changed")
            if total > limits.unpacked_bytes:
                raise CtlError(f"the backup unpacks to more than {_size(limits.unpacked_bytes)}, "
                               "the most a restore takes; nothing changed")
            rel = _member_path(member)
            dest = extracted.joinpath(*rel.parts)
            if member.isdir():
                if rel.parts[0] == "homeassistant":
                    dest.mkdir(parents=True, exist_ok=True)
                    dir_modes[dest] = member.mode & 0o755 | 0o700
                continue
            if str(rel) in seen:
                raise CtlError(f"the backup holds {rel} twice; nothing changed")
            why = _left_out(rel)
            h = hashlib.sha256()
            src = tar.extractfile(member)
            assert src is not None
            if why is not None:
                left_out[str(rel)] = why
                for block in _blocks(src):
                    h.update(block)
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
                with os.fdopen(_create_new(dest, 0o600), "wb") as out:
                    for block in _blocks(src):
                        h.update(block)
                        out.write(block)
                if rel.parts[0] == "homeassistant":  # its mode, without set-id bits
                    os.chmod(dest, member.mode & 0o755 | 0o600)
                elif rel.parts[0] not in PRIVATE:
                    os.chmod(dest, 0o644)  # smartosctl's settings, which the admin reads
            seen[str(rel)] = h.hexdigest()
    if seen != files:
        odd = sorted(set(seen) ^ set(files)) or sorted(k for k in files if files[k] != seen[k])
        raise CtlError(f"the backup is damaged ({odd[0]} does not match its checksum); "
                       "nothing changed")
    for path, mode in dir_modes.items():
        os.chmod(path, mode)
    return _Unpacked(manifest, extracted, left_out)


def _settle(staged: Paths) -> None:
    """Check every settings file the backup brings back with the parser the live code uses
    (one that fails stops the restore), then render what is made from them."""
    from . import network, vpn

    for rel, parse in _parsers().items():
        path = staged.data / rel
        if path.exists():
            try:
                parse(path.read_text(), rel)
            except (CtlError, UnicodeDecodeError) as exc:
                raise CtlError(f"the backup's {exc}; nothing changed",
                               hint="a backup made by SmartOS holds valid settings: is it from "
                                    "someone else?") from None
    for tree in RESTORED_TREES:
        (staged.data / tree).mkdir(exist_ok=True)
    if staged.vpn_settings.exists():
        vpn.write_config(staged, vpn.load(staged))
    wifi = staged.wifi / network.WIFI_SETTINGS
    if wifi.exists():
        network.write_wifi(staged, network.parse_wifi(wifi.read_text()))


def _verified(path: Path, password: str, work: Path, limits: Limits) -> _Unpacked:
    """Decrypt to work (within the limits), unpack what a restore takes, check it all; raise if
    anything is off."""
    size = path.stat().st_size
    if size > limits.archive_bytes:
        raise CtlError(f"the backup is {_size(size)}, more than the {_size(limits.archive_bytes)} a "
                       "restore takes; nothing changed")
    plain = work / "backup.tar.gz"
    with _gpg_home() as home:
        # --max-output: OpenPGP may compress, the decrypted file could be far larger than this one
        _gpg(home, password, "--max-output", str(limits.unpacked_bytes), "--decrypt", "--output",
             plain, path)
    extracted = work / "extracted"
    extracted.mkdir()
    try:
        unpacked = _unpack(plain, extracted, limits)
    except (tarfile.TarError, EOFError, OSError, ValueError, zlib.error) as exc:
        raise CtlError(f"the backup is damaged ({exc}); nothing changed") from exc
    plain.unlink()
    _settle(Paths(data=extracted))
    return unpacked


def _render_firewall(paths: Paths) -> None:
    """The firewall's rule files from the (restored) settings: what `firewall show` prints is
    what the kernel loads next."""
    from . import firewall, vpn

    write_atomically(paths.firewall_include / firewall.RULES_FILE,
                     firewall.render(firewall.load(paths).rules))
    vpn.write_firewall_file(paths, vpn.load(paths))


def restore(paths: Paths, path: Path, password: str, hooks: Hooks,
            limits: Limits = Limits()) -> dict[str, Any]:
    """Restore path (in /data/backups) with password (or, if "", the device's key)."""
    from . import firewall, vpn

    data = paths.data
    password = password or device_key(paths)
    _check_password(password)
    work = Path(tempfile.mkdtemp(prefix=".restore-", dir=data))  # root's, 0700
    previous = data / ".restore-previous"
    include = [paths.firewall_include / firewall.RULES_FILE, paths.firewall_include / vpn.FIREWALL_FILE]
    try:
        unpacked = _verified(path, password, work, limits)
        extracted = unpacked.root
        if previous.exists():
            shutil.rmtree(previous)
        previous.mkdir()
        rules_before = {p: p.read_bytes() if p.exists() else None for p in include}
        had_include = paths.firewall_include.is_dir()
        hooks.stop()
        moved: list[str] = []   # trees moved aside
        placed: list[str] = []  # trees put in place from the backup
        kept: list[tuple[Path, Path]] = []
        try:
            for tree in RESTORED_TREES:
                if (data / tree).exists():
                    os.rename(data / tree, previous / tree)
                    moved.append(tree)
                if (extracted / tree).exists():
                    os.rename(extracted / tree, data / tree)
                else:
                    (data / tree).mkdir()
                placed.append(tree)
                _own(data / tree, hooks.owners.get(tree, (0, 0)), private=tree in PRIVATE)
                kept += _keep_identity(previous / tree, data / tree, tree)
            _render_firewall(paths)
            hooks.start()
        except BaseException:
            for old, new in reversed(kept):
                os.rename(new, old)
            for tree in placed:
                shutil.rmtree(data / tree)
            for tree in moved:
                os.rename(previous / tree, data / tree)
            for rule_file, blob in rules_before.items():
                if blob is None:
                    rule_file.unlink(missing_ok=True)
                else:
                    write_atomically(rule_file, blob.decode())
            if not had_include and paths.firewall_include.is_dir():
                paths.firewall_include.rmdir()
            with contextlib.suppress(OSError):
                previous.rmdir()  # empty again: everything went back
            hooks.start()
            raise
        shutil.rmtree(previous)
        manifest = unpacked.manifest
        return {"restored": path.name, "created": manifest.get("created"),
                "from_host": manifest.get("hostname"),
                "files": len(manifest["files"]) - len(unpacked.left_out),
                "left_out": [f"{name} ({why})" for name, why in sorted(unpacked.left_out.items())]}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _own(tree: Path, owner: tuple[int, int], private: bool) -> None:
    """The restored tree (files and directories only, made by _unpack) to its owner."""
    for where, dirs, names in os.walk(tree):
        for name in [*dirs, *names]:
            os.chown(Path(where) / name, *owner, follow_symlinks=False)
    os.chown(tree, *owner, follow_symlinks=False)
    os.chmod(tree, 0o700 if private else 0o755)


def _keep_identity(old: Path, new: Path, tree: str) -> list[tuple[Path, Path]]:
    """This device's identity, caches and own records stay this device's (they are not in a
    backup); returns what moved, to move it back if the restore fails later."""
    moved = []
    names = SKIP_NAMES | {rel.split("/", 1)[1] for rel in DEVICE_OWN if rel.startswith(f"{tree}/")}
    if old.is_dir():
        for name in sorted(names):
            if (old / name).exists() and not (new / name).exists():
                os.rename(old / name, new / name)
                moved.append((old / name, new / name))
    return moved


def as_dict(info: BackupInfo) -> dict[str, Any]:
    return asdict(info)
