"""`smartosctl diagnostics`: one tarball to attach to a bug report. Versions, status, the
journal of this boot and the previous one, hardware, network and firewall state, RAUC's slots
and Home Assistant's configuration files, with secrets removed: secrets.yaml, the Wi-Fi and
WireGuard directories and Home Assistant's .storage are left out entirely, and any line in
what goes in that sets a password, token, key or secret has its value replaced by ***.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import socket
import stat
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import CtlError, Exit
from .run import run

SECRET_LINE = re.compile(
    r"""(?ix)^(\s*["']?[-\w.]*(?:password|passwd|passphrase|token|secret|api[_-]?key|private[_-]?key|psk|
    client[_-]?secret|auth[_-]?key|access[_-]?key)[-\w.]*["']?\s*[:=]\s*)(\S.*)$""")
URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^/\s:@]+):([^/\s@]+)@")
CONFIG_FILES = ("*.yaml", "*.yml", "*.conf", "*.json")
LEFT_OUT = ("secrets.yaml", ".storage", ".cloud", "wifi", "wireguard", "ssh")
MAX_BYTES = 16 << 20  # in base64 (a third more) well within the system bus's 32 MiB a message


def redact(text: str) -> str:
    """Values of lines that look like secrets become ***; so do passwords inside URLs."""
    lines = []
    for line in text.splitlines():
        m = SECRET_LINE.match(line)
        if m and not m.group(2).startswith("!secret"):
            line = f"{m.group(1)}***"
        lines.append(URL_CREDENTIALS.sub(r"\1\2:***@", line))
    return "\n".join(lines) + ("\n" if text.endswith("\n") else "")


def _command(*argv: str, timeout: float = 60) -> str:
    try:
        result = run(list(argv), check=False, timeout=timeout)
    except Exception as exc:  # one collector failing must not lose the others
        return f"(could not run {' '.join(argv)}: {exc})\n"
    return result.stdout + (f"\n(stderr)\n{result.stderr}" if result.stderr.strip() else "")


def collectors(data: Path) -> dict[str, Callable[[], str]]:
    """Each file of the tarball and how to make it."""
    from .radio import list_radios
    from .status import collect

    def status() -> str:
        return json.dumps(collect(str(data)).as_dict(), indent=2)

    def radios() -> str:
        return json.dumps([r.as_dict() for r in list_radios()], indent=2)

    return {
        "versions/os-release": lambda: Path("/etc/os-release").read_text(),
        "versions/build.json": lambda: Path("/etc/smartos/build.json").read_text(),
        "versions/kernel": lambda: _command("uname", "-a"),
        "versions/packages": lambda: _command("dpkg-query", "-W"),
        "status.json": status,
        "rauc-status.json": lambda: _command("rauc", "status", "--detailed", "--output-format=json"),
        "journal/this-boot.txt": lambda: _command("journalctl", "-b", "0", "-n", "20000", "--no-pager",
                                                  "-o", "short-iso"),
        "journal/previous-boot.txt": lambda: _command("journalctl", "-b", "-1", "-n", "5000",
                                                      "--no-pager", "-o", "short-iso"),
        "journal/kernel.txt": lambda: _command("journalctl", "-k", "-b", "0", "--no-pager",
                                               "-o", "short-iso"),
        "systemd/failed.txt": lambda: _command("systemctl", "--failed", "--no-pager"),
        "hardware/cpuinfo": lambda: Path("/proc/cpuinfo").read_text(),
        "hardware/meminfo": lambda: Path("/proc/meminfo").read_text(),
        "hardware/block-devices.json": lambda: _command("lsblk", "--json", "-o",
                                                        "NAME,SIZE,TYPE,FSTYPE,LABEL,PARTLABEL,MOUNTPOINTS"),
        "hardware/radios.json": radios,
        "network/addresses.json": lambda: _command("ip", "-j", "address"),
        "network/routes.json": lambda: _command("ip", "-j", "route"),
        "network/networkctl.txt": lambda: _command("networkctl", "status", "--no-pager"),
        "firewall/ruleset.nft": lambda: _command("nft", "list", "ruleset"),
        "vpn/wg-show.txt": lambda: _command("wg", "show"),  # shows no private keys
    }


def _config_files(data: Path) -> list[Path]:
    found: list[Path] = []
    for tree in ("homeassistant", "smartos", "network"):
        root = data / tree
        for pattern in CONFIG_FILES:
            for path in root.glob(pattern) if root.is_dir() and not root.is_symlink() else ():
                st = path.lstat()  # a link is not followed (Home Assistant's user makes them)
                if stat.S_ISREG(st.st_mode) and path.name not in LEFT_OUT and st.st_size < (1 << 20):
                    found.append(path)
    return sorted(found)


def _read(path: Path) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as fh:
        return fh.read(1 << 20).decode(errors="replace")


def create(data: Path, target_dir: Path, sources: dict[str, Callable[[], str]] | None = None,
           now: float | None = None) -> dict[str, Any]:
    """Write the tarball into target_dir (the agent: a directory of its own); returns its path
    and size."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))
    name = f"smartos-diagnostics-{socket.gethostname()}-{stamp}.tar.gz"
    final = target_dir / name
    contents = []
    fd = os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out, tarfile.open(fileobj=out, mode="w:gz") as tar:
            def add(arcname: str, text: str) -> None:
                blob = redact(text).encode()
                info = tarfile.TarInfo(f"{name.removesuffix('.tar.gz')}/{arcname}")
                info.size, info.mtime, info.mode = len(blob), int(time.time()), 0o644
                tar.addfile(info, io.BytesIO(blob))
                contents.append(arcname)

            for arcname, make in (sources if sources is not None else collectors(data)).items():
                try:
                    text = make()
                except Exception as exc:
                    text = f"(not collected: {exc})\n"
                add(arcname, text)
            for path in _config_files(data):
                try:
                    text = _read(path)
                except OSError as exc:
                    text = f"(not collected: {exc})\n"
                add(f"config/{path.relative_to(data)}", text)
    except BaseException:
        final.unlink(missing_ok=True)
        raise
    return {"path": str(final), "size_bytes": final.stat().st_size, "files": contents}


def bundle(data: Path, sources: dict[str, Callable[[], str]] | None = None,
           now: float | None = None) -> dict[str, Any]:
    """The tarball made in a root-only directory and returned in the reply (base64): the agent
    writes nothing where its caller points; smartosctl saves it (save())."""
    with tempfile.TemporaryDirectory(prefix="smartos-diagnostics-") as work:
        made = create(data, Path(work), sources=sources, now=now)
        blob = Path(made["path"]).read_bytes()
    if len(blob) > MAX_BYTES:
        raise CtlError(f"the diagnostics tarball is {len(blob) >> 20} MiB, more than the "
                       f"{MAX_BYTES >> 20} MiB a reply carries", hint="journalctl -b > journal.txt",
                       code=Exit.FAILED)
    return {"name": Path(made["path"]).name, "size_bytes": len(blob), "files": made["files"],
            "tarball_base64": base64.b64encode(blob).decode()}


def save(result: dict[str, Any], target_dir: Path) -> dict[str, Any]:
    """Write the agent's tarball into target_dir as whoever runs smartosctl, into a new file."""
    if not target_dir.is_dir():
        raise CtlError(f"--to: {target_dir} is not a directory")
    name = Path(result["name"]).name
    path = target_dir / name
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        raise CtlError(f"{path} exists already", hint="wait a second and try again") from None
    with os.fdopen(fd, "wb") as out:
        out.write(base64.b64decode(result["tarball_base64"]))
    return {"path": str(path), "size_bytes": result["size_bytes"], "files": result["files"]}
