"""The build host: which Debian tools a build needs, installing the missing ones, and sanity checks."""

from __future__ import annotations

import os
import shutil
import sys
import urllib.error
import urllib.request
from pathlib import Path

from rich.console import Console

from .config import Board
from .errors import SmartOSError
from .run import run, which

# program -> the Debian package that ships it
TOOLS = {
    "mmdebstrap": "mmdebstrap",
    "sfdisk": "fdisk",
    "mkfs.ext4": "e2fsprogs",
    "mkfs.fat": "dosfstools",
    "mcopy": "mtools",
    "grub-editenv": "grub-common",
    "xz": "xz-utils",
    "bmaptool": "bmap-tools",
    "qemu-img": "qemu-utils",
    "systemctl": "systemd",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
}
BOARD_TOOLS: dict[Board, dict[str, str]] = {
    Board.X86_64: {"qemu-system-x86_64": "qemu-system-x86", "/usr/share/ovmf/OVMF.fd": "ovmf"},
}


def missing_tools(board: Board) -> dict[str, str]:
    need = TOOLS | BOARD_TOOLS.get(board, {})
    return {tool: pkg for tool, pkg in need.items()
            if not (Path(tool).exists() if tool.startswith("/") else which(tool))}


def ensure_tools(board: Board, logfile: Path, console: Console) -> None:
    """Install what is missing with apt-get (Debian/Ubuntu hosts), or say exactly what to install."""
    missing = missing_tools(board)
    if not missing:
        return
    packages = sorted(set(missing.values()))
    if os.geteuid() != 0 or not which("apt-get"):
        raise SmartOSError(f"missing host tools: {', '.join(sorted(missing))}",
                           hint=f"sudo apt-get install {' '.join(packages)}")
    console.print(f"  installing host packages: {' '.join(packages)}")
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "update", "-q"], env=env, logfile=logfile)
    run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages], env=env, logfile=logfile)


def ensure_space(*dirs: Path, need_gib: int) -> None:
    for d in dirs:
        probe = d
        while not probe.exists():
            probe = probe.parent
        free = shutil.disk_usage(probe).free / 2**30
        if free < need_gib:
            raise SmartOSError(f"not enough disk space in {d}: {free:.1f} GiB free, a build needs "
                               f"about {need_gib} GiB", hint="free some space or set output_dir/cache_dir")


def check_mirror(mirror: str, suite: str) -> None:
    url = f"{mirror.rstrip('/')}/dists/{suite}/Release"
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            resp.read(64)
    except (urllib.error.URLError, TimeoutError) as exc:
        raise SmartOSError(f"debian.mirror: cannot reach {url}: {getattr(exc, 'reason', exc)}",
                           hint="check the URL and the network, or set debian.mirror to a "
                                "reachable mirror") from None


def uv_binary() -> Path:
    """uv from this Python environment (a PyPI dependency of the builder)."""
    try:
        from uv import find_uv_bin
    except ImportError:
        found = which("uv")
        if not found:
            raise SmartOSError("uv is not installed", hint=f"{sys.executable} -m pip install uv") from None
        return Path(found)
    return Path(find_uv_bin())
