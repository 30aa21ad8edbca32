"""What the Raspberry Pi boards share: arm64 Debian, an MBR disk, and U-Boot choosing the slot.

Boot chain: the Pi's firmware (start*.elf, from Debian's raspi-firmware) reads config.txt on the
FAT boot partition, applies the device tree for the model (Debian's kernel DTBs, upstream names:
upstream_kernel=1), and starts U-Boot (Debian's u-boot-rpi, the rpi_arm64 build that serves the
Pi 3 and the Pi 4). U-Boot runs boot.scr, which picks root slot A or B from the slot state in
smartos.env, counts one try off, and boots that slot's own kernel and initrd (/vmlinuz and
/initrd.img inside the slot), so an update replaces kernel and userspace together.

Why U-Boot and not the firmware's tryboot: the Pi 3 has no tryboot or autoboot.txt, and U-Boot's
boot counting is what RAUC's uboot backend drives (BOOT_ORDER, BOOT_<slot>_LEFT) and what Home
Assistant OS uses on these boards; one scheme keeps both boards on one slot interface.

The same boot.scr boots QEMU's virt machine with Debian's U-Boot for QEMU, which is how the tests
run the real slot selection, kernel, initrd and userspace. What that cannot show is the Pi
firmware stage (start*.elf reading config.txt and starting U-Boot).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

from smartos_image.errors import SmartOSError
from smartos_image.layout import ESP, ROOT_A, ROOT_B, Layout
from smartos_image.run import run

from . import fill, qemu_common

ARCH = "arm64"
COMPONENTS = ("main", "non-free-firmware")  # raspi-firmware and the Wi-Fi firmware live there
TABLE = "dos"
DISK_ID = "534d4f53"  # "SMOS"; the same in roles/boards/rpi*.yml (the stable partition names)
# firmware-brcm80211 + raspi-firmware's nvram files: the onboard Wi-Fi; bluez-firmware: its
# Bluetooth half (BCM43430A1.hcd on the Pi 3 B, BCM4345C0.hcd on the Pi 3 B+ and 4).
COMMON_PACKAGES = ("linux-image-arm64", "raspi-firmware", "u-boot-rpi", "libubootenv-tool",
                   "firmware-brcm80211", "bluez-firmware", "wpasupplicant")
# raspi-firmware's kernel and initramfs hooks copy kernel, initrd and DTBs into /boot/firmware and
# rewrite config.txt (kernel= the bare kernel, bypassing U-Boot) on every kernel change. On
# SmartOS the builder writes the boot partition and each slot carries its own kernel: the hooks
# are diverted to *.distrib (which run-parts skips) and replaced by no-ops, for good.
DIVERTED = ("/etc/kernel/postinst.d/z50-raspi-firmware", "/etc/kernel/postrm.d/z50-raspi-firmware",
            "/etc/initramfs/post-update.d/z50-raspi-firmware")
# Debian's arm64 kernel package carries device trees for every arm64 board it supports (56 MB);
# a Pi image keeps the Broadcom ones (the boot partition gets its models' from there).
# Its display drivers for graphics cards and other vendors' SoCs no Pi 3 or 4 can have are left
# out too (4 MiB of the .img.xz); the Pi's own (vc4, v3d), virtio (QEMU) and udl (USB
# displays) stay.
FOREIGN_GPUS = ("amd", "radeon", "nouveau", "xe", "ast", "qxl", "vmwgfx", "hyperv", "msm", "tegra",
                "mediatek", "rockchip", "sun4i", "meson", "imx", "etnaviv", "lima", "panfrost",
                "panthor", "hisilicon", "tidss", "mxsfb", "arm")
PATH_RULES = ("exclude=/usr/lib/linux-image-*/*", "include=/usr/lib/linux-image-*/broadcom/*",
              *(f"exclude=/usr/lib/modules/*/kernel/drivers/gpu/drm/{gpu}/*" for gpu in FOREIGN_GPUS))
QEMU_BINARY = "qemu-system-aarch64"
QEMU_UBOOT = Path("/usr/lib/u-boot/qemu_arm64/u-boot.bin")  # Debian's u-boot-qemu
UBOOT = "usr/lib/u-boot/rpi_arm64/u-boot.bin"
MAX_TRIES = 3
ENV_SIZE = 0x4000
# The kernel command line: cmdline.txt on the boot partition, which the firmware passes on in the
# device tree. Serial console on the GPIO header's UART (ttyS1 with Debian's kernel on the Pi 3
# and 4), screen on tty0. In QEMU (no firmware) boot.scr uses DEFAULT_ARGS instead.
DEFAULT_ARGS = "rw rootwait panic=30 net.ifnames=0"
CMDLINE = f"console=ttyS1,115200 console=tty0 {DEFAULT_ARGS}"
BOOT_CMD = Path(__file__).parent / "data" / "boot.cmd"


def boot_script(layout: Layout) -> str:
    values = {"BOOT_PART": layout.by_name(ESP).number, "A_PART": layout.by_name(ROOT_A).number,
              "B_PART": layout.by_name(ROOT_B).number, "DISK_ID": layout.disk_id,
              "MAX_TRIES": MAX_TRIES, "DEFAULT_ARGS": DEFAULT_ARGS}
    return fill(BOOT_CMD.read_text(), values)


def cmdline(layout: Layout) -> str:
    """cmdline.txt: root= names slot A by its PARTUUID (boot.scr puts the chosen slot's there)."""
    return f"{CMDLINE} root=PARTUUID={layout.by_name(ROOT_A).uuid} rauc.slot=A\n"


def config_txt(model_section: str) -> str:
    return f"""\
# SmartOS: read by the Raspberry Pi firmware at power-on. Written by the image builder.
# https://www.raspberrypi.com/documentation/computers/config_txt.html
[all]
arm_64bit=1
# Device trees by their upstream names: Debian's kernel, not Raspberry Pi OS's.
upstream_kernel=1
# U-Boot picks root slot A or B (boot.scr) and boots that slot's kernel and initrd.
kernel=u-boot.bin
# Serial console on GPIO 14/15 (pins 8/10), 115200 baud: the mini UART, /dev/ttyS1 in Linux.
enable_uart=1
disable_splash=1
{model_section}
# Zigbee/Thread radio HATs on the GPIO header (off by default). A HAT's UART is the same
# GPIO 14/15 pair as the serial console: remove console=ttyS1,115200 from cmdline.txt and reboot;
# the radio is then /dev/ttyS1 (Home Assistant: ZHA or the OpenThread Border Router). I2C or SPI
# based HATs: uncomment the matching line.
#dtparam=i2c_arm=on
#dtparam=spi=on
"""


def uboot_env(order: str = "A", a_left: int = MAX_TRIES, b_left: int = 0) -> str:
    """The first slot state: slot A with its tries; B is empty until the first update fills it."""
    return f"BOOT_ORDER={order}\nBOOT_A_LEFT={a_left}\nBOOT_B_LEFT={b_left}\n"


def kernel_dir(rootfs: Path) -> Path:
    dirs = sorted((rootfs / "usr/lib").glob("linux-image-*"))
    if not dirs:
        raise SmartOSError("the image has no kernel (linux-image-arm64 is missing)")
    return dirs[-1]


def fill_boot_partition(rootfs: Path, esp: Path, layout: Layout, logfile: Path,
                        firmware: Iterable[str], dtbs: Iterable[str], model_section: str) -> None:
    """Firmware, DTBs, U-Boot, config.txt, cmdline.txt, boot.scr and the slot state."""
    fw_dir = rootfs / "usr/lib/raspi-firmware"
    for name in firmware:
        shutil.copy(fw_dir / name, esp / name)
    broadcom = kernel_dir(rootfs) / "broadcom"
    copied = 0
    for pattern in dtbs:
        for dtb in sorted(broadcom.glob(pattern)):
            shutil.copy(dtb, esp / dtb.name)
            copied += 1
    if not copied:
        raise SmartOSError(f"no device trees matching {', '.join(dtbs)} in {broadcom}")
    (esp / "overlays").mkdir(exist_ok=True)
    for overlay in sorted((fw_dir / "overlays").glob("*.dtbo")):
        shutil.copy(overlay, esp / "overlays" / overlay.name)
    shutil.copy(rootfs / UBOOT, esp / "u-boot.bin")
    (esp / "config.txt").write_text(config_txt(model_section))
    (esp / "cmdline.txt").write_text(cmdline(layout))
    cmd = esp.parent / "boot.cmd"
    cmd.write_text(boot_script(layout))
    run(["mkimage", "-A", "arm64", "-O", "linux", "-T", "script", "-C", "none", "-n", "SmartOS slots",
         "-d", cmd, esp / "boot.scr"], logfile=logfile)
    env = esp.parent / "smartos-env.txt"
    env.write_text(uboot_env())
    run(["mkenvimage", "-s", str(ENV_SIZE), "-o", esp / "smartos.env", env], logfile=logfile)


def qemu_args(image: Path, ssh_port: int, http_port: int, restrict: bool, workdir: Path,
              guest_forwards: tuple[tuple[int, int], ...] = ()) -> list[str]:
    """QEMU's virt machine with U-Boot: the image's boot.scr, kernel, initrd and root slot run as
    on the Pi; the Pi firmware stage does not (there is no emulator for it here)."""
    return [QEMU_BINARY, "-machine", "virt", "-cpu", "cortex-a72",
            *qemu_common(image, ssh_port, http_port, restrict, guest_forwards), "-bios", str(QEMU_UBOOT)]
