"""Board definitions: one module per board, chosen by the Board enum; nothing else asks `if board`."""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType
from typing import Protocol

from smartos_image.config import Board
from smartos_image.layout import Layout


class BoardModule(Protocol):
    ARCH: str  # Debian architecture
    COMPONENTS: tuple[str, ...]
    PACKAGES: tuple[str, ...]  # board-specific packages: kernel, bootloader, firmware
    DIVERTED: tuple[str, ...]  # package files replaced by no-ops in the image (dpkg-divert)
    PATH_RULES: tuple[str, ...]  # more dpkg path-exclude/include rules for the image
    TABLE: str  # partition table: "gpt" or "dos"
    DISK_ID: str  # MBR disk identifier ("dos" tables)
    QEMU_BINARY: str

    def make_esp(self, rootfs: Path, esp: Path, layout: Layout, logfile: Path) -> None: ...

    def qemu_args(self, image: Path, ssh_port: int, http_port: int, restrict: bool,
                  workdir: Path, guest_forwards: tuple[tuple[int, int], ...] = ()) -> list[str]: ...


def fill(template: str, values: dict[str, object]) -> str:
    """A boot-loader template with its @KEY@ placeholders replaced."""
    for key, value in values.items():
        template = template.replace(f"@{key}@", str(value))
    return template


GUEST_HOST = "10.0.2.100"  # where a guest_forwards port appears inside the VM


def qemu_common(image: Path, ssh_port: int, http_port: int, restrict: bool,
                guest_forwards: tuple[tuple[int, int], ...] = ()) -> list[str]:
    """What every board's VM shares: the accelerator, CPUs, memory, the disk and the network.

    guest_forwards: (guest port, host port) pairs: the guest connects to GUEST_HOST:port and
    reaches 127.0.0.1:host port (a release server in the tests), even with restrict on.

    TCG unless asked: on some hosts /dev/kvm opens but KVM fails mid-boot, which no quick probe
    catches. SMARTOS_ACCEL=kvm opts in (QEMU still falls back to TCG if KVM cannot start). User
    networking with ssh and Home Assistant forwarded to 127.0.0.1 only.
    """
    accel = ["-accel", "tcg"]
    if os.environ.get("SMARTOS_ACCEL") == "kvm":
        accel = ["-accel", "kvm", "-accel", "tcg"]
    net = f"user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:{ssh_port}-:22," \
          f"hostfwd=tcp:127.0.0.1:{http_port}-:8123"
    if restrict:
        net += ",restrict=on"
    for guest_port, host_port in guest_forwards:
        # one socat per connection: a plain tcp: chardev would carry only one connection
        net += f",guestfwd=tcp:{GUEST_HOST}:{guest_port}-cmd:socat - TCP:127.0.0.1:{host_port}"
    return [*accel, "-smp", "2", "-m", "2048", "-drive", f"file={image},format=qcow2,if=virtio",
            "-nic", net]


def board_module(board: Board) -> BoardModule:
    from . import rpi3, rpi4, x86_64

    modules: dict[Board, ModuleType] = {Board.X86_64: x86_64, Board.RPI4: rpi4, Board.RPI3: rpi3}
    return modules[board]
