"""Board modules: what the Raspberry Pi boot partition is made of, checked without a build, and
the host checks that guard a foreign-architecture build."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from smartos_image import host, layout, stages
from smartos_image.boards import board_module, raspberrypi
from smartos_image.config import Board, Partitions
from smartos_image.errors import SmartOSError

REPO = Path(__file__).resolve().parents[2]
PLAN = layout.plan(Partitions(esp=64, root=2560, data=512), table="dos", disk_id=raspberrypi.DISK_ID)


@pytest.mark.parametrize("board", [Board.RPI4, Board.RPI3])
def test_pi_boards_share_one_slot_interface_with_the_roles(board: Board) -> None:
    """The partition names the builder writes are the ones the device's fstab and RAUC use."""
    module = board_module(board)
    assert (module.ARCH, module.TABLE, module.DISK_ID) == ("arm64", "dos", raspberrypi.DISK_ID)
    settings = yaml.safe_load((REPO / "roles" / "boards" / f"{board.value}.yml").read_text())
    assert settings["base__disk_id"] == module.DISK_ID
    assert settings["ota__bootloader"] == "uboot"
    assert settings["base__boot_mount"] == "/boot/firmware"


def test_cmdline_names_slot_a_by_partuuid() -> None:
    line = raspberrypi.cmdline(PLAN)
    assert line.endswith("\n") and line.count("\n") == 1  # the firmware reads one line
    args = line.split()
    assert "root=PARTUUID=534d4f53-02" in args
    assert "rauc.slot=A" in args
    assert "console=ttyS1,115200" in args


def test_boot_script_has_every_placeholder_filled() -> None:
    script = raspberrypi.boot_script(PLAN)
    assert "@" not in script.replace("${", "")
    assert "load ${smartos_dev}:1 ${smartos_env} smartos.env" in script
    assert 'setenv smartos_part 2' in script and 'setenv smartos_part 3' in script
    assert "root=PARTUUID=534d4f53-0${smartos_part}" in script


@pytest.mark.parametrize(("board", "firmware", "dtb"), [
    (Board.RPI4, "start4.elf", "bcm2711-rpi-"), (Board.RPI3, "bootcode.bin", "bcm2837-rpi-3-")])
def test_model_specific_parts(board: Board, firmware: str, dtb: str) -> None:
    module = board_module(board)
    assert firmware in module.FIRMWARE  # type: ignore[attr-defined]
    assert any(p.startswith(dtb) for p in module.DTBS)  # type: ignore[attr-defined]
    text = raspberrypi.config_txt(module.MODEL)  # type: ignore[attr-defined]
    settings = [line for line in text.splitlines() if line and not line.startswith("#")]
    for needed in ("arm_64bit=1", "kernel=u-boot.bin", "enable_uart=1", "upstream_kernel=1"):
        assert needed in settings
    assert not any(s.startswith("dtoverlay=") for s in settings)  # HAT overlays: documented, off


def test_missing_binfmt_registration_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(SmartOSError) as err:
        host.check_emulation("arm64", binfmt_dir=tmp_path)
    assert "qemu-aarch64" in err.value.message
    assert err.value.hint is not None
    assert "update-binfmts --enable qemu-aarch64" in err.value.hint
    (tmp_path / "qemu-aarch64").write_text("disabled\ninterpreter /usr/libexec/qemu-binfmt/x\n")
    with pytest.raises(SmartOSError):
        host.check_emulation("arm64", binfmt_dir=tmp_path)
    (tmp_path / "qemu-aarch64").write_text("enabled\ninterpreter /usr/libexec/qemu-binfmt/x\n")
    host.check_emulation("arm64", binfmt_dir=tmp_path)
    host.check_emulation(host.native_arch(), binfmt_dir=tmp_path / "absent")  # nothing to emulate


def test_cached_tree_of_another_architecture_is_refused(tmp_path: Path) -> None:
    (tmp_path / "var/lib/dpkg").mkdir(parents=True)
    (tmp_path / "var/lib/dpkg/status").write_text(
        "Package: base-files\nArchitecture: amd64\n\nPackage: dpkg\nStatus: install ok installed\n"
        "Architecture: amd64\nVersion: 1.22.21\n")
    stages.check_tree_arch(tmp_path, "amd64")
    with pytest.raises(SmartOSError) as err:
        stages.check_tree_arch(tmp_path, "arm64")
    assert "amd64" in err.value.message and "arm64" in err.value.message
    assert err.value.hint is not None and str(tmp_path) in err.value.hint
