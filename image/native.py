"""Native programs inside a foreign-architecture root tree.

An arm64 tree on an x86-64 host runs each of its programs through qemu-user. Most of the time a
Debian bootstrap and an initramfs build spend there goes into small programs started thousands
of times by shell scripts (dash, coreutils, sed, grep) and into dpkg-deb unpacking archives:
work whose result does not depend on the CPU that does it.

So the builder tree of the host's architecture (the same Debian release, cached) is mounted
read-only at NATIVE_ROOT inside the target, and patched copies of its tools (made once, in
TOOLS_DIR, loading their libraries from NATIVE_ROOT) are bind-mounted read-only over the target's
own files. The kernel then starts them natively. Nothing in the target is written; unmounting
restores it exactly.

What is never overlaid:
* what an initramfs hook copies into the image: kmod (modprobe, depmod), busybox, udev, fsck.
  depmod runs natively only where it is found through PATH (the kernel package's postinst);
* programs whose output depends on the architecture (uname, dpkg, dpkg-query, ldconfig, ldd);
* interpreters whose modules are architecture-specific (perl, python3).
tests/image/test_pi_image.py checks that every ELF file in the root slot and in its initramfs is
an arm64 one.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .chroot import bind_read_only, umount_below
from .run import run

NATIVE_ROOT = "/run/smartos-native"
TOOLS_DIR = "opt/smartos-native"  # inside the native builder tree
# The native loader and libraries, as seen from inside the target tree.
TRIPLETS = {"amd64": ("x86_64-linux-gnu", "ld-linux-x86-64.so.2"),
            "arm64": ("aarch64-linux-gnu", "ld-linux-aarch64.so.1")}
# Bound over the target's file of the same path while packages install and roles run.
OVERLAID = tuple(f"usr/bin/{name}" for name in (
    "dash", "sed", "grep", "tar", "gzip", "zstd", "cpio", "find", "xargs", "cmp", "dpkg-deb",
    "dpkg-split", "basename", "cat", "chmod", "chown", "cp", "cut", "date", "dirname", "env",
    "head", "ln", "ls", "md5sum", "mkdir", "mktemp", "mv", "readlink", "realpath", "rm", "rmdir",
    "sha256sum", "sort", "stat", "tail", "touch", "tr", "tsort", "uniq", "wc", "test", "[", "expr",
    "true", "false", "printf", "tee", "install", "dd", "du", "sleep", "sync", "od",
)) + ("usr/lib/dracut/dracut-install",)
# Found through PATH only (TOOLS_DIR first in it): the tool's package is not installed yet when
# the overlay starts, or the file must stay the target's own for an initramfs to copy.
PATH_ONLY = {"depmod": "usr/bin/kmod"}


def install_tools(builder: Path, arch: str, logfile: Path) -> None:
    """Copy the tools into the builder tree's TOOLS_DIR and point each at NATIVE_ROOT's loader
    and libraries (patchelf, inside the builder: its own, native)."""
    triplet, loader = TRIPLETS[arch]
    libs = f"{NATIVE_ROOT}/usr/lib/{triplet}"
    tools = builder / TOOLS_DIR
    tools.mkdir(parents=True, exist_ok=True)
    names = []
    for rel in OVERLAID:
        if (builder / rel).is_file():
            (tools / Path(rel).name).write_bytes((builder / rel).read_bytes())
            names.append(Path(rel).name)
    for name, rel in PATH_ONLY.items():
        (tools / name).write_bytes((builder / rel).read_bytes())
        names.append(name)
    for name in names:
        (tools / name).chmod(0o755)
        run(["chroot", builder, "patchelf", "--set-interpreter", f"{libs}/{loader}", "--force-rpath",
             "--set-rpath", libs, f"/{TOOLS_DIR}/{name}"], logfile=logfile)


def path_dir() -> str:
    """TOOLS_DIR as the target sees it, for the front of PATH."""
    return f"{NATIVE_ROOT}/{TOOLS_DIR}"


def overlays(builder: Path, root: Path) -> list[tuple[Path, str]]:
    """(native tool, target path) pairs for the tools both trees have."""
    tools = builder / TOOLS_DIR
    return [(tools / Path(rel).name, f"/{rel}") for rel in OVERLAID
            if (tools / Path(rel).name).is_file() and (root / rel).is_file()
            and not (root / rel).is_symlink()]


def mount_root(builder: Path, root: Path) -> None:
    """The native tree at NATIVE_ROOT inside root, read-only (nothing can write through it)."""
    point = root / NATIVE_ROOT.lstrip("/")
    point.mkdir(parents=True, exist_ok=True)
    bind_read_only(builder, point)


def mount_overlays(builder: Path, root: Path) -> None:
    for src, inside in overlays(builder, root):
        bind_read_only(src, root / inside.lstrip("/"))


def unmount(root: Path) -> None:
    """Undo mount_root and mount_overlays, leaving root as it was."""
    for rel in OVERLAID:
        umount_below(root / rel)
    point = root / NATIVE_ROOT.lstrip("/")
    umount_below(point)
    if point.is_dir():
        point.rmdir()


def mmdebstrap_options(builder: Path) -> list[str]:
    """mmdebstrap options that run the overlay for a foreign tree: the native tree from the setup
    hook on, the overlaid tools once the essential packages (which ship them) are in, and the
    tools directory first in the PATH apt gives dpkg and maintainer scripts. The matching
    --customize-hook (last of all) is unmount_hook()."""
    me = f"{sys.executable} -m smartos_image.native"
    return [f'--setup-hook={me} mount-root "$1" {builder}',
            f'--essential-hook={me} mount-overlays "$1" {builder}',
            f'--aptopt=DPkg::Path "{path_dir()}:/usr/sbin:/usr/bin:/sbin:/bin"']


def unmount_hook() -> str:
    return f'--customize-hook={sys.executable} -m smartos_image.native unmount "$1"'


def main(argv: list[str] | None = None) -> None:
    """The mmdebstrap hooks' entry: `python -m smartos_image.native VERB ROOT [BUILDER]`."""
    ap = argparse.ArgumentParser(prog="smartos_image.native")
    ap.add_argument("verb", choices=("mount-root", "mount-overlays", "unmount"))
    ap.add_argument("root", type=Path)
    ap.add_argument("builder", type=Path, nargs="?")
    args = ap.parse_args(argv)
    if args.verb == "unmount":
        unmount(args.root)
    elif args.builder is None:
        ap.error(f"{args.verb} needs the native builder tree")
    elif args.verb == "mount-root":
        mount_root(args.builder, args.root)
    else:
        mount_overlays(args.builder, args.root)


if __name__ == "__main__":
    main()
