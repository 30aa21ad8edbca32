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
    QEMU_BINARY: str

    def make_esp(self, rootfs: Path, esp: Path, layout: Layout, logfile: Path) -> None: ...

    def qemu_args(self, image: Path, ssh_port: int, http_port: int, restrict: bool,
                  workdir: Path) -> list[str]: ...


def board_module(board: Board) -> BoardModule:
    from . import x86_64

    modules: dict[Board, ModuleType] = {Board.X86_64: x86_64}
    return modules[board]
