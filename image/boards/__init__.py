"""Board definitions: one module per board, chosen by the Board enum; nothing else asks `if board`."""

from __future__ import annotations

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
                  workdir: Path) -> list[str]: ...


def board_module(board: Board) -> BoardModule:
    from . import rpi3, rpi4, x86_64

    modules: dict[Board, ModuleType] = {Board.X86_64: x86_64, Board.RPI4: rpi4, Board.RPI3: rpi3}
    return modules[board]
