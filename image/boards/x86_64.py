"""x86-64 UEFI machines (mini PCs, NUCs, VMs): GRUB on the ESP picks root slot A or B.

GRUB keeps its slot state in EFI/BOOT/grubenv with the variables RAUC's grub backend reads and
writes (ORDER, A_OK, A_TRY, B_OK, B_TRY). A slot is tried while OK=1 and fewer than three tries
have been counted; `rauc status mark-good` resets the count.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from smartos_image.layout import ROOT_A, ROOT_B, Layout
from smartos_image.run import run

from . import fill, qemu_common

ARCH = "amd64"
COMPONENTS = ("main",)
PACKAGES = ("linux-image-amd64", "grub-efi-amd64-bin", "grub-common", "firmware-linux-free")
DIVERTED: tuple[str, ...] = ()
PATH_RULES: tuple[str, ...] = ()
TABLE = "gpt"
DISK_ID = ""
QEMU_BINARY = "qemu-system-x86_64"
OVMF = Path("/usr/share/ovmf/OVMF.fd")
MAX_TRIES = 3

GRUB_MODULES = ("part_gpt", "fat", "ext2", "normal", "linux", "search", "search_label",
                "search_fs_uuid", "echo", "configfile", "efi_gop", "all_video", "regexp",
                "test", "loadenv", "gzio", "zstd", "serial", "terminal", "sleep", "reboot")

CMDLINE = "rw rootwait panic=30 systemd.gpt_auto=0 console=ttyS0,115200 console=tty0"

GRUB_CFG = """\
# SmartOS boot selection. Written by the image builder; slot state lives in grubenv.
set timeout=1
serial --unit=0 --speed=115200
terminal_input console serial
terminal_output console serial

set ORDER="A B"
set A_OK=0
set B_OK=0
set A_TRY=0
set B_TRY=0
load_env --file $prefix/grubenv

# GRUB has no arithmetic: the next try count, looked up.
function next_try {
    if [ "$1" = "0" ]; then next=1; elif [ "$1" = "1" ]; then next=2; else next=3; fi
}

regexp --set=1:disk '^([^,]+),' "$root"
slot=""
for s in $ORDER; do
    if [ -z "$slot" ]; then
        if [ "$s" = "A" ]; then ok=$A_OK; try=$A_TRY; fi
        if [ "$s" = "B" ]; then ok=$B_OK; try=$B_TRY; fi
        if [ "$ok" = "1" -a "$try" -lt @MAX_TRIES@ ]; then slot=$s; fi
    fi
done

if [ "$slot" = "A" ]; then next_try $A_TRY; A_TRY=$next; save_env --file $prefix/grubenv A_TRY; fi
if [ "$slot" = "B" ]; then next_try $B_TRY; B_TRY=$next; save_env --file $prefix/grubenv B_TRY; fi
if [ -z "$slot" ]; then
    echo "SmartOS: no bootable slot left (A_OK=$A_OK A_TRY=$A_TRY B_OK=$B_OK B_TRY=$B_TRY)."
    echo "Booting slot A for recovery."
    slot=A
fi
if [ "$slot" = "A" ]; then default=0; else default=1; fi

menuentry "SmartOS slot A (ok=$A_OK tries=$A_TRY)" {
    set root="($disk,gpt@A_NUM@)"
    linux /vmlinuz root=PARTUUID=@A_UUID@ @CMDLINE@ rauc.slot=A
    initrd /initrd.img
}
menuentry "SmartOS slot B (ok=$B_OK tries=$B_TRY)" {
    set root="($disk,gpt@B_NUM@)"
    linux /vmlinuz root=PARTUUID=@B_UUID@ @CMDLINE@ rauc.slot=B
    initrd /initrd.img
}
"""


def grub_cfg(layout: Layout) -> str:
    a, b = layout.by_name(ROOT_A), layout.by_name(ROOT_B)
    values = {"A_NUM": a.number, "B_NUM": b.number, "A_UUID": a.uuid, "B_UUID": b.uuid,
              "CMDLINE": CMDLINE, "MAX_TRIES": MAX_TRIES}
    return fill(GRUB_CFG, values)


def make_esp(rootfs: Path, esp: Path, layout: Layout, logfile: Path) -> None:
    """Fill the ESP tree: GRUB at the removable-media path, its config, and the slot state."""
    boot = esp / "EFI" / "BOOT"
    boot.mkdir(parents=True, exist_ok=True)
    # The image's own GRUB builds the EFI binary, so it matches the modules and the ext4 it reads.
    run(["chroot", rootfs, "grub-mkimage", "-O", "x86_64-efi", "-p", "/EFI/BOOT",
         "-o", "/tmp/BOOTX64.EFI", *GRUB_MODULES], logfile=logfile)
    shutil.move(rootfs / "tmp/BOOTX64.EFI", boot / "BOOTX64.EFI")
    (boot / "grub.cfg").write_text(grub_cfg(layout))
    env = boot / "grubenv"
    run(["grub-editenv", env, "create"], logfile=logfile)
    run(["grub-editenv", env, "set", "ORDER=A B", "A_OK=1", "A_TRY=0", "B_OK=0", "B_TRY=0"],
        logfile=logfile)


def qemu_args(image: Path, ssh_port: int, http_port: int, restrict: bool, workdir: Path,
              guest_forwards: tuple[tuple[int, int], ...] = ()) -> list[str]:
    # noreboot=off: the chipset's TCO watchdog resets the machine when it expires, as on real
    # boards (QEMU's default only logs it), so a reboot that hangs is ended by the watchdog
    # systemd arms for it (RebootWatchdogSec, roles/base).
    return [QEMU_BINARY, "-machine", "q35",
            *qemu_common(image, ssh_port, http_port, restrict, guest_forwards),
            "-global", "ICH9-LPC.noreboot=off", "-bios", str(OVMF)]
