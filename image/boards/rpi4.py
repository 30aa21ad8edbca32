"""Raspberry Pi 4 Model B, Pi 400 and Compute Module 4 (arm64). The boot chain and slot
selection they share with the Pi 3 are in raspberrypi.py; this module holds what differs."""

from __future__ import annotations

from pathlib import Path

from smartos_image.layout import Layout

from . import raspberrypi as pi

ARCH, COMPONENTS, TABLE, DISK_ID = pi.ARCH, pi.COMPONENTS, pi.TABLE, pi.DISK_ID
DIVERTED, PATH_RULES, QEMU_BINARY = pi.DIVERTED, pi.PATH_RULES, pi.QEMU_BINARY
qemu_args = pi.qemu_args

PACKAGES = pi.COMMON_PACKAGES
# start4.elf/fixup4.dat: the Pi 4 family's firmware (its boot ROM and EEPROM need no bootcode.bin).
FIRMWARE = ("start4.elf", "fixup4.dat")
DTBS = ("bcm2711-rpi-*.dtb",)  # 4 B, 400, CM4 (on the CM4 IO board)
MODEL = """\
[pi4]
# Nothing model-specific: enable_uart=1 already holds the core clock steady for the mini UART.
"""


def make_esp(rootfs: Path, esp: Path, layout: Layout, logfile: Path) -> None:
    pi.fill_boot_partition(rootfs, esp, layout, logfile, FIRMWARE, DTBS, MODEL)

