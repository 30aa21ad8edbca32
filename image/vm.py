"""Boot a built image in QEMU: user-mode networking, ssh and Home Assistant forwarded to 127.0.0.1.

Each boot runs on a fresh copy-on-write overlay, so the built image is never changed and every
boot of a new overlay is a device's first boot.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .boards import board_module
from .config import Board
from .errors import SmartOSError
from .run import Process, filter_file, interactive, run, spawn, stop

log = logging.getLogger("smartos")
KERNEL_STARTED = b"Linux version"
POWERED_OFF = b"reboot: Power down"  # what Linux prints last before it powers off, on every board
FIRMWARE_STALL = 180  # seconds of console silence before a kernel started that count as a hang
MAX_RESETS = 3

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
    firmware_stall: float = FIRMWARE_STALL
    hangs: list[str] = field(default_factory=list, init=False)  # firmware hangs the guard reset

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
        self._spawn()

    def _spawn(self) -> None:
        """A new QEMU process on the same disk. -no-reboot: QEMU exits where the machine would
        reset (a reboot, the watchdog), and _guard powers it on again as a new process: under
        TCG, OVMF has hung after warm resets inside one QEMU process (the console stopped at its
        first screen clear, the vCPUs spinning), never on a fresh start."""
        self._qmp_socket.unlink(missing_ok=True)
        cmd = [*self.command(), "-no-reboot", "-display", "none", "-monitor", "none",
               "-qmp", f"unix:{self._qmp_socket},server=on,wait=off",
               "-chardev", f"file,id=console,path={self.console_log},append=on", "-serial", "chardev:console"]
        self.proc = spawn(cmd, self.workdir / "qemu.err")
        threading.Thread(target=self._guard, args=(self.proc,), daemon=True).start()

    @property
    def _qmp_socket(self) -> Path:
        return self.workdir / "qmp.sock"

    def qmp(self, command: str, **arguments: object) -> object:
        """One QMP command (QEMU's machine protocol) on the VM's socket; its "return" value."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(30)
            s.connect(str(self._qmp_socket))
            stream = s.makefile("rwb")
            stream.readline()  # the greeting
            reply: dict[str, object] = {}
            for cmd in ({"execute": "qmp_capabilities"}, {"execute": command, "arguments": arguments}):
                stream.write(json.dumps(cmd).encode() + b"\n")
                stream.flush()
                while not ({"return", "error"} & set(reply := json.loads(stream.readline()))):
                    pass  # an asynchronous event
                if "error" in reply:
                    raise SmartOSError(f"QMP {cmd['execute']}: {reply['error']}")
            return reply["return"]

    def _guard(self, proc: Process) -> None:
        """Power the machine on again when its QEMU exits for a reset (-no-reboot), and power-cycle
        one whose firmware or boot loader stopped before any kernel started.

        Under TCG, OVMF and GRUB have hung after a warm reboot now and then (CI runs: the console
        stopped at the firmware's first screen clear), where a real board would have rebooted.
        Nothing of SmartOS runs at that point, so the guard stands in for a power cycle, at most
        MAX_RESETS times per machine and each after a full firmware_stall of silence; every one is
        kept in self.hangs with the CPU registers at the hang (hang-N.txt), for the tests to
        report. A hang once a kernel has started is never touched: that is for the tests to see.
        """
        boot_start = self.console_log.stat().st_size if self.console_log.exists() else 0
        started = time.time()
        while True:
            time.sleep(1)
            if proc.poll() is not None:
                reset = proc.returncode == 0 and POWERED_OFF not in self._console_from(boot_start)
                if self.proc is proc and reset:
                    self._spawn()  # the guest reset the machine: a new QEMU, as a power-on
                return
            if self.proc is not proc:
                return
            try:
                silent = time.time() - max(self.console_log.stat().st_mtime, started)
            except OSError:
                continue
            if (silent < self.firmware_stall or len(self.hangs) >= MAX_RESETS
                    or KERNEL_STARTED in self._console_from(boot_start)):
                continue
            where = self.workdir / f"hang-{len(self.hangs) + 1}.txt"
            try:
                where.write_text(str(self.qmp("human-monitor-command", **{"command-line": "info registers"})))
            except (OSError, SmartOSError) as exc:
                where.write_text(f"registers not read: {exc}\n")
            last = _printable(self._console_from(boot_start))[-200:]
            self.hangs.append(f"silent {silent:.0f} s before any kernel started (console ended: "
                              f"{last!r}); powered off and on, registers in {where}")
            log.warning("VM power-cycled: %s", self.hangs[-1])
            if self.proc is proc:
                proc.kill()
                proc.wait()
                self._spawn()
            return

    def _console_from(self, offset: int) -> bytes:
        try:
            with self.console_log.open("rb") as fh:
                fh.seek(offset)
                return fh.read()
        except OSError:
            return b""

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
                           hint=f"see {self.console_log}; it ended:\n{self.console_tail()}")

    def console_tail(self, size: int = 1500) -> str:
        try:
            data = self.console_log.read_bytes()[-size:]
        except OSError:
            return ""
        return _printable(data)

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
        proc = self.proc
        if proc is None or proc.poll() is None:
            return
        deadline = time.monotonic() + 30
        while proc.returncode == 0 and self.proc is proc and time.monotonic() < deadline:
            time.sleep(0.5)  # a reset: _guard is starting the next QEMU
        if self.proc is proc:
            err = (self.workdir / "qemu.err").read_text(errors="replace")[-2000:]
            raise SmartOSError(f"QEMU exited with {proc.returncode}: {err}")

    def power_cut(self) -> None:
        """Pull the plug (kill QEMU at once) and power on again: the disk keeps only what had
        reached it."""
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.kill()
            proc.wait()
        self.start()

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            stop(proc)


def _printable(data: bytes) -> str:
    """Console bytes without terminal escape sequences."""
    text = re.sub(r"\x1b\[[0-9;?=]*[A-Za-z]", "", data.decode(errors="replace"))
    return re.sub(r"[^\n\t -~]", "", text)
