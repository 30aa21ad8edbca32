"""Raspberry Pi 3 Model B and B+ (arm64; 1 GiB of memory). The boot chain and slot selection
they share with the Pi 4 are in raspberrypi.py; this module holds what differs."""

from __future__ import annotations

from pathlib import Path

from smartos_image.layout import Layout

from . import raspberrypi as pi

ARCH, COMPONENTS, TABLE, DISK_ID = pi.ARCH, pi.COMPONENTS, pi.TABLE, pi.DISK_ID
DIVERTED, PATH_RULES, QEMU_BINARY = pi.DIVERTED, pi.PATH_RULES, pi.QEMU_BINARY
qemu_args = pi.qemu_args

PACKAGES = pi.COMMON_PACKAGES
# The Pi 3's boot ROM loads bootcode.bin from the SD card, which then starts start.elf.
FIRMWARE = ("bootcode.bin", "start.elf", "fixup.dat")
DTBS = ("bcm2837-rpi-3-*.dtb", "bcm2837-rpi-cm3*.dtb")  # 3 B, 3 B+, 3 A+, CM3
MODEL = """\
[pi3]
# Home Assistant needs the 1 GiB more than the graphics core does (default 76 MiB). 16 would
# switch to the cut-down firmware (start_cd.elf); 32 keeps the standard one.
gpu_mem=32
"""


def make_esp(rootfs: Path, esp: Path, layout: Layout, logfile: Path) -> None:
    pi.fill_boot_partition(rootfs, esp, layout, logfile, FIRMWARE, DTBS, MODEL)

