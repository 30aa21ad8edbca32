"""The Raspberry Pi images, read as files, the way the Pi's firmware, U-Boot and the kernel will
find them on the card: partition table, boot partition, and the root slot's contents.

No test here runs the Pi firmware (start*.elf and the Pi 4's EEPROM exist only on a Pi): that
config.txt makes the firmware start U-Boot with these DTBs is checked as text against the
firmware's documented settings. The tests/system suite boots the rpi4 image's own U-Boot script,
kernel, initrd and root slot in QEMU's arm64 virt machine.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import PI_BOARDS

pytestmark = pytest.mark.image
MIB = 1024 * 1024
EM_AARCH64 = 183
# The models each image boots, by the device tree the firmware loads for them (upstream names).
MODEL_DTBS = {
    "rpi4": ["bcm2711-rpi-4-b.dtb", "bcm2711-rpi-400.dtb", "bcm2711-rpi-cm4-io.dtb"],
    "rpi3": ["bcm2837-rpi-3-b.dtb", "bcm2837-rpi-3-b-plus.dtb"],
}
FIRMWARE = {"rpi4": ["start4.elf", "fixup4.dat"], "rpi3": ["bootcode.bin", "start.elf", "fixup.dat"]}


@dataclass
class PiImage:
    board: str
    path: Path
    table: dict

    def offset(self, number: int) -> int:
        return int(self.table["partitions"][number - 1]["start"]) * 512

    def boot_file(self, name: str) -> bytes:
        return subprocess.run(["mtype", "-i", f"{self.path}@@{self.offset(1)}", f"::{name}"],
                              capture_output=True, check=True).stdout

    def boot_listing(self) -> list[str]:
        out = subprocess.run(["mdir", "-b", "-i", f"{self.path}@@{self.offset(1)}", "::/"],
                             capture_output=True, text=True, check=True).stdout
        return [line.strip().removeprefix("::/") for line in out.splitlines() if line.strip()]

    def debugfs(self, request: str, slot: int = 2) -> str:
        return subprocess.run(["debugfs", "-R", request, f"{self.path}?offset={self.offset(slot)}"],
                              capture_output=True, text=True, check=True).stdout

    def debugfs_bytes(self, path: str) -> bytes:
        return subprocess.run(["debugfs", "-R", f"cat {path}", f"{self.path}?offset={self.offset(2)}"],
                              capture_output=True, check=True).stdout

    def root_file(self, path: str) -> str:
        return self.debugfs(f"cat {path}")

    def root_names(self, path: str) -> list[str]:
        """Entry names of a directory in root slot A (`ls -p`: /inode/mode/uid/gid/name/size/)."""
        names = [line.split("/")[5] for line in self.debugfs(f"ls -p {path}").splitlines()
                 if line.startswith("/")]
        return [n for n in names if n not in (".", "..")]


@pytest.fixture(scope="module", params=PI_BOARDS)
def pi(request: pytest.FixtureRequest, image_for: Callable[[str], Path]) -> PiImage:
    board = str(request.param)
    path = image_for(board)
    table = json.loads(subprocess.run(["sfdisk", "--json", str(path)], capture_output=True, text=True,
                                      check=True).stdout)["partitiontable"]
    return PiImage(board, path, table)


def test_mbr_with_boot_partition_first(pi: PiImage) -> None:
    """MBR: the table every Pi's boot ROM reads (the Pi 3's reads nothing else)."""
    assert pi.table["label"] == "dos"
    assert pi.table["id"] == "0x534d4f53"
    parts = pi.table["partitions"]
    assert [p["type"] for p in parts] == ["c", "83", "83", "83"]
    assert parts[0].get("bootable") is True
    assert pi.path.name == f"smartos-0.1.0-{pi.board}.img"


def test_boot_partition_has_firmware_uboot_and_each_models_device_tree(pi: PiImage) -> None:
    files = pi.boot_listing()
    for name in [*FIRMWARE[pi.board], *MODEL_DTBS[pi.board], "u-boot.bin", "boot.scr", "smartos.env",
                 "config.txt", "cmdline.txt"]:
        assert name in files, (name, files)
    # Debian's U-Boot build for the Pi 3 and 4 (rpi_arm64), the same bytes as in the root slot
    assert pi.boot_file("u-boot.bin") == pi.debugfs_bytes("/usr/lib/u-boot/rpi_arm64/u-boot.bin")
    script = pi.boot_file("boot.scr")
    assert script[:4] == bytes.fromhex("27051956")  # a U-Boot legacy image (mkimage -T script)
    assert b"BOOT_ORDER" in script and b"booti" in script


def test_cmdline_boots_slot_a_by_its_stable_name(pi: PiImage) -> None:
    text = pi.boot_file("cmdline.txt").decode()
    assert text.count("\n") == 1
    args = text.split()
    assert "root=PARTUUID=534d4f53-02" in args  # the MBR disk id is fixed for every SmartOS Pi image
    assert "rauc.slot=A" in args
    assert "console=ttyS1,115200" in args  # serial console on GPIO 14/15


def test_config_txt_starts_uboot_in_64_bit_mode(pi: PiImage) -> None:
    lines = [ln.strip() for ln in pi.boot_file("config.txt").decode().splitlines()]
    settings = [ln for ln in lines if ln and not ln.startswith("#") and not ln.startswith("[")]
    for needed in ("arm_64bit=1", "kernel=u-boot.bin", "enable_uart=1", "upstream_kernel=1"):
        assert needed in settings
    assert "#dtparam=i2c_arm=on" in lines  # HAT settings documented, left off


def test_slot_state_starts_on_slot_a(pi: PiImage) -> None:
    """smartos.env is a U-Boot environment (CRC32 + NUL-separated pairs), the format boot.scr's
    `env import -c` and RAUC's fw_setenv both use."""
    env = pi.boot_file("smartos.env")
    assert len(env) == 0x4000
    (crc,) = struct.unpack("<I", env[:4])
    assert crc == zlib.crc32(env[4:])
    pairs = dict(item.split("=", 1) for item in env[4:].split(b"\0\0")[0].decode().split("\0"))
    assert pairs == {"BOOT_ORDER": "A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "0"}


def test_root_slot_carries_its_kernel_and_initrd(pi: PiImage) -> None:
    names = pi.root_names("/boot")
    assert any(n.startswith("vmlinuz-") for n in names) and any(n.startswith("initrd.img-") for n in names)
    assert "boot/vmlinuz-" in pi.debugfs("stat /vmlinuz")  # the names boot.scr loads
    assert "boot/initrd.img-" in pi.debugfs("stat /initrd.img")
    assert pi.root_names("/boot/firmware") == []  # the boot partition's mount point, empty


def test_root_slot_is_configured_like_every_smartos_image(pi: PiImage) -> None:
    fstab = pi.root_file("/etc/fstab")
    assert "PARTUUID=534d4f53-04  /data  ext4" in fstab
    assert "PARTUUID=534d4f53-01  /boot/firmware  vfat" in fstab
    rauc = pi.root_file("/etc/rauc/system.conf")
    assert f"compatible=smartos-{pi.board}" in rauc
    assert "bootloader=uboot" in rauc
    assert "device=/dev/disk/by-partuuid/534d4f53-02" in rauc
    assert "device=/dev/disk/by-partuuid/534d4f53-03" in rauc
    assert "/boot/firmware/smartos.env" in pi.root_file("/etc/fw_env.config")
    assert pi.root_file("/etc/smartos/board").strip() == pi.board
    assert "policy drop" in pi.root_file("/etc/nftables.conf")
    assert 'SYMLINK+="zigbee"' in pi.root_file("/etc/udev/rules.d/70-smartos-radios.rules")
    assert "smartos.conf" in pi.root_names("/etc/ssh/sshd_config.d")
    assert "PasswordAuthentication no" in pi.root_file("/etc/ssh/sshd_config.d/smartos.conf")
    assert "smartos.service" in pi.root_names("/etc/systemd/system/multi-user.target.wants")
    assert "MODULES=list" in pi.root_file("/etc/initramfs-tools/conf.d/smartos.conf")
    assert "auto_add_modules base mmc usb_storage block" in pi.root_file(
        "/etc/initramfs-tools/hooks/smartos")
    firmware = pi.root_names("/usr/lib/firmware/brcm")
    assert any(n.startswith("brcmfmac43455-sdio") for n in firmware)  # Pi 4 / 3 B+ Wi-Fi
    assert {"BCM4345C0.hcd", "BCM43430A1.hcd"} <= set(firmware)  # their Bluetooth


def elf_machines(tree: Path) -> dict[int, list[str]]:
    """Every ELF file below tree, by its e_machine."""
    machines: dict[int, list[str]] = {}
    for dirpath, _, names in os.walk(tree):
        for name in names:
            p = Path(dirpath) / name
            if p.is_symlink() or not p.is_file():
                continue
            with p.open("rb") as fh:
                head = fh.read(20)
            if head[:4] == b"\x7fELF":
                machines.setdefault(struct.unpack("<H", head[18:20])[0], []).append(str(p.relative_to(tree)))
    return machines


def unpack_initramfs(blob: bytes, dest: Path) -> None:
    """An initramfs as the kernel reads it: uncompressed newc cpio archives, then one compressed
    (zstd) archive; here everything is written below dest."""
    pos = 0
    while blob[pos:pos + 6] == b"070701":
        while True:
            head = blob[pos:pos + 110]
            fields = [int(head[6 + 8 * i:14 + 8 * i], 16) for i in range(13)]
            mode, filesize, namesize = fields[1], fields[6], fields[11]
            name = blob[pos + 110:pos + 110 + namesize - 1].decode()
            data = (pos + 110 + namesize + 3) & ~3
            pos = (data + filesize + 3) & ~3
            if name == "TRAILER!!!":
                break
            if mode & 0o170000 == 0o100000:
                target = dest / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(blob[data:data + filesize])
        while pos < len(blob) and blob[pos] == 0:
            pos += 1
    rest = subprocess.run(["zstd", "-dc"], input=blob[pos:], capture_output=True, check=True).stdout
    subprocess.run(["cpio", "-idm", "--quiet", "--no-absolute-filenames"], input=rest, cwd=dest,
                   check=True)


def test_root_slot_and_initramfs_hold_only_arm64_programs(pi: PiImage, tmp_path: Path) -> None:
    """The build borrows native x86-64 tools while packages install and the initramfs is made
    (image/native.py); none of them may stay behind, in the slot or copied into the initramfs."""
    root = tmp_path / "root"
    root.mkdir()
    for top in ("usr", "etc", "var", "boot"):
        pi.debugfs(f"rdump /{top} {root}")
    # the venv (/opt) has its own test below; VideoCore firmware (machine 137) is the Pi GPU's
    machines = {m: [f for f in files if not f.startswith("usr/lib/raspi-firmware/")]
                for m, files in elf_machines(root).items()}
    machines = {m: files for m, files in machines.items() if files}
    assert set(machines) == {EM_AARCH64}, {m: files[:5] for m, files in machines.items()}
    assert len(machines[EM_AARCH64]) > 500
    modules_dir = next(root.glob("usr/lib/modules/*"))
    assert not list(modules_dir.rglob("*.ko.xz"))  # stored plain, compressed with the image
    dep = (modules_dir / "modules.dep").read_text()
    listed = {m for line in dep.splitlines() for m in line.replace(":", " ").split()}
    assert all((modules_dir / m).is_file() for m in listed)  # every module and its dependencies
    # the Pi's display drivers are there, those of graphics cards and other SoCs are not
    assert {"vc4.ko", "v3d.ko"} <= {Path(m).name for m in listed}
    assert not list(modules_dir.rglob("amdgpu.ko*")) and not list(modules_dir.rglob("nouveau.ko*"))
    initrd = next(root.glob("boot/initrd.img-*"))
    unpacked = tmp_path / "initramfs"
    unpacked.mkdir()
    unpack_initramfs(initrd.read_bytes(), unpacked)
    in_initrd = elf_machines(unpacked)
    assert set(in_initrd) == {EM_AARCH64}, {m: files[:5] for m, files in in_initrd.items()}
    modules = {p.name.split(".ko")[0].replace("-", "_") for p in unpacked.rglob("*.ko*")}
    builtin = next(unpacked.glob("usr/lib/modules/*/modules.builtin")).read_text()
    modules |= {Path(line).name.split(".ko")[0].replace("-", "_") for line in builtin.split()}
    # SD card (Pi 4: emmc2 through sdhci-iproc; Pi 3: sdhost), USB disks (Pi 4: the VL805 on
    # PCIe, released from reset by the firmware driver; Pi 3: dwc2), NVMe on a CM4, and the
    # virtio disk QEMU boots it from. Built into Debian's kernel or modules in the initramfs.
    for needed in ("mmc_block", "sdhci_iproc", "bcm2835", "pcie_brcmstb", "reset_raspberrypi",
                   "xhci_pci", "dwc2", "usb_storage", "uas", "sd_mod", "nvme", "virtio_blk", "ext4"):
        assert needed in modules, needed
    # no network drivers, SCSI host adapters or udev hardware database: nothing root needs
    assert not any(m.startswith(("r8169", "e1000", "igb", "lpfc", "qla2xxx", "megaraid")) for m in modules)
    assert not list(unpacked.rglob("hwdb.bin"))


def test_every_native_binary_in_the_venv_is_aarch64(pi: PiImage, tmp_path: Path) -> None:
    """Native wheels were chosen for aarch64 by the x86-64 host (and the few without one were
    built under emulation): every ELF file in the venv must be an AArch64 binary."""
    if pi.board != PI_BOARDS[0]:
        pytest.skip("the venv is the same for every arm64 board (one cache entry)")
    out = tmp_path / "venv"
    out.mkdir()
    pi.debugfs(f"rdump /opt/smartos/venv {out}")
    machines = elf_machines(out)
    assert set(machines) == {EM_AARCH64}, {m: files[:5] for m, files in machines.items()}
    assert len(machines[EM_AARCH64]) > 100  # extension modules of ~70 packages, and ffmpeg
    assert any("imageio_ffmpeg/binaries/ffmpeg-linux-aarch64" in f for f in machines[EM_AARCH64])
