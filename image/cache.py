"""Content-addressed cache directories outside the repository.

An entry is published by renaming a finished temporary directory, so an interrupted build never
leaves a half-written entry behind under its final name.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .chroot import umount_below


def digest(*parts: Any, files: Iterable[Path] = ()) -> str:
    """A short stable hash of JSON-able parts plus the names and contents of files."""
    h = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode())
    for f in sorted(files):
        h.update(str(f).encode())
        h.update(f.read_bytes() if f.is_file() else b"<dir>")
    return h.hexdigest()[:16]


def tree_files(*roots: Path) -> list[Path]:
    """Every file and symlink below roots, for hashing a directory's content."""
    out: list[Path] = []
    for root in roots:
        if root.exists():
            out += [p for p in root.rglob("*") if p.is_file() or p.is_symlink()]
    return out


def _is_key(name: str) -> bool:
    """Entry names are digest() keys; anything else in a kind's directory is not the cache's."""
    return len(name) == 16 and all(c in "0123456789abcdef" for c in name)


class Entry:
    def __init__(self, cache_dir: Path, kind: str, key: str) -> None:
        self.path = cache_dir / kind / key
        self.tmp = cache_dir / kind / f".{key}.tmp"

    def exists(self) -> bool:
        return self.path.is_dir()

    def begin(self, create: bool = True) -> Path:
        """The temporary path to fill; create=False for tools that make the directory themselves."""
        if self.tmp.exists():
            umount_below(self.tmp)  # an interrupted build's mounts, before deleting anything
            shutil.rmtree(self.tmp)
        self.tmp.parent.mkdir(parents=True, exist_ok=True)
        if create:
            self.tmp.mkdir()
        return self.tmp

    def publish(self) -> Path:
        self.tmp.rename(self.path)
        return self.path

    def prune_others(self, keep: int = 4) -> None:
        """Keep the newest `keep` entries of this kind so the cache doesn't grow without end (room
        for one entry per board, x86-64, rpi4 and rpi3, plus the previous one)."""
        siblings = sorted((p for p in self.path.parent.iterdir() if _is_key(p.name)),
                          key=lambda p: p.stat().st_mtime, reverse=True)
        for old in siblings[keep:]:
            if old != self.path:
                shutil.rmtree(old, ignore_errors=True)


@contextmanager
def exclusive(cache_dir: Path, waiting: Callable[[str], None]) -> Iterator[None]:
    """One build at a time per cache directory (a second one waits; waiting(holder's pid) says so).

    Holding the lock, whatever a killed build left behind is cleared first: its mounts and its
    temporary entries and work directories (a SIGKILL or a power cut runs no clean-up of its own).
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    with (cache_dir / ".lock").open("a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            waiting(lock.read().strip() or "unknown")
            fcntl.flock(lock, fcntl.LOCK_EX)
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        clear_leftovers(cache_dir)
        yield


def clear_leftovers(cache_dir: Path) -> None:
    """Unmount everything below the cache (a killed build's chroot mounts, also in finished
    entries such as the builder tree it was using) and delete the temporary entries (.KEY.tmp)
    and work directories of builds that ended without cleaning up. Only call it holding
    exclusive(): a running build's are in use."""
    umount_below(cache_dir)
    leftovers = [p for kind in cache_dir.iterdir() if kind.is_dir() for p in kind.glob(".*.tmp")]
    if (cache_dir / "work").is_dir():
        leftovers += list((cache_dir / "work").iterdir())
    for path in leftovers:  # unmounted above
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
