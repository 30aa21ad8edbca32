"""Enter a root tree for commands that must run inside it, and always leave no mounts behind."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from .errors import SmartOSError
from .run import run

HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def umount_below(root: Path) -> None:
    """Unmount everything at or below root, deepest first (also after an interrupted build)."""
    prefix = str(root.resolve())
    with open("/proc/self/mounts") as fh:
        points = [line.split()[1] for line in fh]
    for point in sorted((p for p in points if p == prefix or p.startswith(prefix + "/")),
                        key=len, reverse=True):
        run(["umount", "--lazy", point], check=False)


def bind_read_only(src: Path, target: Path) -> None:
    """Mount src (a directory or a file) over target, read-only: nothing writes through it."""
    run(["mount", "--bind", src, target])
    run(["mount", "-o", "remount,bind,ro", target])


@contextmanager
def mounted(root: Path, binds: Sequence[tuple[Path, str]] = (), network: bool = False,
            read_only: Sequence[tuple[Path, str]] = ()) -> Iterator[None]:
    """/proc, /sys and /dev inside root, plus read-write bind mounts of host directories and
    read-only ones of host directories or files (a file over an existing file).

    With network, the host's resolver and CA bundle are copied in so HTTPS works from inside (this
    machine's TLS goes through a CA only the host knows).
    """
    if os.geteuid() != 0:
        raise SmartOSError("building an image needs root (chroot and mounts)",
                           hint="run it with sudo")
    try:
        for src, fstype in (("proc", "proc"), ("sysfs", "sysfs")):
            target = root / src.replace("sysfs", "sys")
            target.mkdir(exist_ok=True)
            run(["mount", "-t", fstype, src, target])
        (root / "dev").mkdir(exist_ok=True)
        run(["mount", "--rbind", "/dev", root / "dev"])
        run(["mount", "--make-rslave", root / "dev"])
        for host_dir, inside in binds:
            target = root / inside.lstrip("/")
            target.mkdir(parents=True, exist_ok=True)
            run(["mount", "--bind", host_dir, target])
        for host_path, inside in read_only:
            target = root / inside.lstrip("/")
            if host_path.is_dir():
                target.mkdir(parents=True, exist_ok=True)
            bind_read_only(host_path, target)
        if network:
            resolv = root / "etc/resolv.conf"
            if resolv.is_symlink() or resolv.exists():
                resolv.unlink()
            shutil.copy("/etc/resolv.conf", resolv)
            if HOST_CA_BUNDLE.exists():
                shutil.copy(HOST_CA_BUNDLE, root / "etc/host-ca.crt")
        yield
    finally:
        umount_below(root)


def chroot_env(network: bool = False) -> dict[str, str]:
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "HOME": "/root", "DEBIAN_FRONTEND": "noninteractive"}
    if network:
        env.update({"SSL_CERT_FILE": "/etc/host-ca.crt", "UV_NATIVE_TLS": "1"})
        for var in ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"):
            if var in os.environ:
                env[var] = os.environ[var]
    return env
