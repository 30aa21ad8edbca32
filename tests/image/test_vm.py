"""The test VM's guard against firmware that hangs before any kernel starts (see Machine._guard):
it power-cycles the machine (a new QEMU process)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from smartos_image.vm import Machine

pytestmark = pytest.mark.vm


def test_a_vm_stuck_in_its_firmware_is_reset_and_reported(tmp_path: Path) -> None:
    """A blank disk: OVMF finds nothing to boot and goes quiet, as the hangs seen under TCG did
    (those come too rarely to provoke)."""
    disk = tmp_path / "smartos-0.0.0-x86-64.img"
    with disk.open("wb") as fh:
        fh.truncate(64 << 20)
    vm = Machine(disk, tmp_path / "vm", ssh_port=2290, http_port=8190, firmware_stall=20)
    vm.start()
    try:
        start = time.monotonic()
        while not vm.hangs and time.monotonic() - start < 240:
            time.sleep(2)
        assert vm.hangs, vm.console_tail()
        assert "before any kernel started" in vm.hangs[0]
        assert "RIP=" in (tmp_path / "vm" / "hang-1.txt").read_text()
        assert vm.proc is not None and vm.proc.poll() is None  # powered on again, not left off
    finally:
        vm.stop()
