"""Boot a built image in QEMU: user-mode networking, ssh and Home Assistant forwarded to 127.0.0.1.

Each boot runs on a fresh copy-on-write overlay, so the built image is never changed and every
boot of a new overlay is a device's first boot.
"""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .boards import board_module
from .config import Board
from .errors import SmartOSError
from .run import Process, filter_file, interactive, run, spawn, stop


def find_image(out: Path, board: str | None = None) -> Path:
    """The newest image in out (of the board, when one is given)."""
    suffix = f"-{board}" if board else ""
    images = sorted(list(out.glob(f"smartos-*{suffix}.img")) + list(out.glob(f"smartos-*{suffix}.img.xz")),
                    key=lambda p: p.stat().st_mtime)
    if not images:
        what = f"{board} image" if board else "image"
        raise SmartOSError(f"no {what} in {out}",
                           hint=f"build one first: sudo ./build.py{' --board ' + board if board else ''}")
    return images[-1]


def board_of(image: Path) -> Board:
    for board in Board:
        if f"-{board.value}.img" in image.name:
            return board
    raise SmartOSError(f"cannot tell the board from the image name {image.name}")


def raw_image(image: Path, workdir: Path) -> Path:
    if image.suffix != ".xz":
        return image
    raw = workdir / image.name.removesuffix(".xz")
    if not raw.exists() or raw.stat().st_mtime < image.stat().st_mtime:
        tmp = raw.with_suffix(".part")
        filter_file(["xz", "-dc"], image, tmp)  # once, kept beside the VM
        tmp.rename(raw)
    return raw


@dataclass
class Machine:
    image: Path
    workdir: Path
    ssh_port: int = 2222
    http_port: int = 8123
    restrict: bool = True  # no route to the internet: only the host forwards
    disk_size: str = ""  # e.g. "8G": a bigger virtual disk than the image, as on a real SD card
    guest_forwards: tuple[tuple[int, int], ...] = ()  # (guest port, 127.0.0.1 port): boards.GUEST_HOST
    proc: Process | None = field(default=None, init=False)

    @property
    def console_log(self) -> Path:
        return self.workdir / "console.log"

    def overlay(self) -> Path:
        disk = self.workdir / "disk.qcow2"
        if not disk.exists():
            run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw",
                 "-b", raw_image(self.image, self.workdir).resolve(), disk,
                 *([self.disk_size] if self.disk_size else [])])
        return disk

    def command(self) -> list[str]:
        board = board_module(board_of(self.image))
        return board.qemu_args(self.overlay(), self.ssh_port, self.http_port, self.restrict,
                               self.workdir, self.guest_forwards)

    def start(self) -> None:
        """Boot in the background; the serial console goes to console.log."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        for port in (self.ssh_port, self.http_port):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    raise SmartOSError(f"127.0.0.1:{port} is already in use",
                                       hint="stop the other VM or pick other ports")
        cmd = [*self.command(), "-display", "none", "-monitor", "none",
               "-serial", f"file:{self.console_log}"]
        self.proc = spawn(cmd, self.workdir / "qemu.err")

    def interactive(self) -> int:
        """Boot with the serial console on this terminal (Ctrl-A X quits)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        return interactive([*self.command(), "-nographic"])

    def wait_for_port(self, port: int, timeout: float) -> float:
        """Seconds until a TCP banner arrives on the forward (QEMU accepts before the guest does)."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            self._alive()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                    s.settimeout(5)
                    if s.recv(4):
                        return time.monotonic() - start
            except OSError:
                pass
            time.sleep(1)
        raise SmartOSError(f"nothing answered on 127.0.0.1:{port} within {timeout:.0f} s",
                           hint=f"see {self.console_log}")

    def wait_for_http(self, url: str, timeout: float) -> float:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            self._alive()
            try:
                with urllib.request.urlopen(url, timeout=10) as resp:
                    if resp.status == 200:
                        return time.monotonic() - start
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(2)
        raise SmartOSError(f"{url} did not answer 200 within {timeout:.0f} s")

    def _alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            err = (self.workdir / "qemu.err").read_text(errors="replace")[-2000:]
            raise SmartOSError(f"QEMU exited with {self.proc.returncode}: {err}")

    def stop(self) -> None:
        if self.proc is None:
            return
        stop(self.proc)
        self.proc = None

