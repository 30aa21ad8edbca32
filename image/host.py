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
    "/etc/ssl/certs/ca-certificates.crt": "ca-certificates",  # PyPI and Home Assistant's wheels over HTTPS
    # Debian's archive keys (Ubuntu hosts lack them): mmdebstrap, and `smartos pin-runtime`'s gpgv
    "/usr/share/keyrings/debian-archive-keyring.gpg": "debian-archive-keyring",
    "gpgv": "gpgv",
}
_PI_TOOLS = {
    "mkimage": "u-boot-tools", "mkenvimage": "u-boot-tools",  # boot.scr and the slot state
    "qemu-aarch64-static": "qemu-user-static", "update-binfmts": "binfmt-support",  # arm64 chroots
    "arch-test": "arch-test",  # mmdebstrap's check that the host can run a foreign architecture
    "qemu-system-aarch64": "qemu-system-arm", "/usr/lib/u-boot/qemu_arm64/u-boot.bin": "u-boot-qemu",
}
BOARD_TOOLS: dict[Board, dict[str, str]] = {
    Board.X86_64: {"qemu-system-x86_64": "qemu-system-x86", "/usr/share/ovmf/OVMF.fd": "ovmf"},
    Board.RPI4: _PI_TOOLS,
    Board.RPI3: _PI_TOOLS,
}
# what `smartos release` and `smartos keys` need on top: RAUC packs and signs bundles (it runs
# mksquashfs), openssl makes keys and reads signatures
RELEASE_TOOLS = {"rauc": "rauc", "mksquashfs": "squashfs-tools", "openssl": "openssl"}
# what the test suite (`smartos test`, `./build.py test`) needs on top of every board's and the
# release tools: smartosctl's unit tests run nftables, ip, a private dbus-daemon, WireGuard and
# gpg for real; the VM tests route the guest to the release server with socat
TEST_TOOLS = {"nft": "nftables", "ip": "iproute2", "dbus-daemon": "dbus-daemon", "wg": "wireguard-tools",
              "gpg": "gpg", "socat": "socat", "busctl": "systemd",
              "zstd": "zstd", "cpio": "cpio"}  # unpacking the Pi images' initramfs
# Debian architecture -> the name binfmt_misc registers its emulator under
QEMU_BINFMT = {"arm64": "qemu-aarch64", "amd64": "qemu-x86_64"}
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
# Debian architecture -> the CPU qemu-user presents to a foreign tree's programs. Its default,
# "max", has pointer authentication, which Debian's arm64 binaries use on every function return
# and which qemu computes in software: emulated programs ran 4-7x slower with it. The Cortex-A53
# (Pi 3) has none and is the oldest core the images support, so nothing built under emulation can
# pick an instruction a Pi 3 lacks.
EMULATED_CPU = {"arm64": "cortex-a53"}


def missing_tools(board: Board, release: bool = False) -> dict[str, str]:
    need = TOOLS | BOARD_TOOLS.get(board, {}) | (RELEASE_TOOLS if release else {})
    return {tool: pkg for tool, pkg in need.items()
            if not (Path(tool).exists() if tool.startswith("/") else which(tool))}


def missing_test_tools() -> dict[str, str]:
    missing: dict[str, str] = {}
    for board in Board:
        missing |= missing_tools(board, release=True)
    return missing | {tool: pkg for tool, pkg in TEST_TOOLS.items() if not which(tool)}


def ensure_tools(board: Board, logfile: Path, console: Console, release: bool = False) -> None:
    """Install what a build is missing with apt-get (Debian/Ubuntu hosts), or say exactly what
    to install."""
    install_missing(missing_tools(board, release), logfile, console)


def install_missing(missing: dict[str, str], logfile: Path, console: Console) -> None:
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


def native_arch() -> str:
    """The build host's Debian architecture."""
    machine = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def emulation_env(arch: str) -> dict[str, str]:
    """Environment for programs that run (or start programs) in an arch root tree."""
    if arch == native_arch() or arch not in EMULATED_CPU:
        return {}
    return {"QEMU_CPU": EMULATED_CPU[arch]}


def binfmt_name(arch: str) -> str:
    return QEMU_BINFMT.get(arch, f"qemu-{arch}")


def check_emulation(arch: str, binfmt_dir: Path = BINFMT_DIR) -> None:
    """A foreign-architecture root tree runs its programs through qemu-user, which the kernel
    starts for them only when binfmt_misc has it registered (and enabled)."""
    if arch == native_arch():
        return
    name = binfmt_name(arch)
    entry = binfmt_dir / name
    enabled = entry.is_file() and entry.read_text().startswith("enabled")
    if not enabled:
        raise SmartOSError(
            f"this {native_arch()} host cannot run {arch} programs: binfmt_misc has no enabled "
            f"{name} entry ({entry})",
            hint=f"sudo sh -c 'mount -t binfmt_misc binfmt_misc {binfmt_dir} 2>/dev/null; "
                 f"update-binfmts --enable {name}'")


def enable_emulation(arch: str, binfmt_dir: Path = BINFMT_DIR) -> None:
    """Register qemu-user for arch with the kernel (root; what the README's test command does on a
    fresh host, where a container may even lack the binfmt_misc mount). A build only checks
    (check_emulation) and says how: it never changes the kernel's settings by itself."""
    try:
        check_emulation(arch, binfmt_dir)
        return
    except SmartOSError:
        if os.geteuid() != 0:
            raise
    if not (binfmt_dir / "register").exists():
        run(["mount", "-t", "binfmt_misc", "binfmt_misc", binfmt_dir], check=False)
    run(["update-binfmts", "--enable", binfmt_name(arch)], check=False)
    check_emulation(arch, binfmt_dir)


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
