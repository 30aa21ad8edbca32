"""Partition layout arithmetic, and the table it produces as read back by sfdisk itself."""

import json
import subprocess
from pathlib import Path

from smartos_image import layout
from smartos_image.config import Partitions

SIZES = Partitions(esp=64, root=2560, data=512)


def test_partitions_are_back_to_back_aligned_and_data_is_last() -> None:
    plan = layout.plan(SIZES)
    names = [p.name for p in plan.partitions]
    assert names == [layout.ESP, layout.ROOT_A, layout.ROOT_B, layout.DATA]
    assert plan.partitions[0].start_mib == 1
    for before, after in zip(plan.partitions, plan.partitions[1:], strict=False):
        assert after.start_mib == before.end_mib
    assert plan.disk_mib == 1 + 64 + 2 * 2560 + 512 + 1
    assert plan.by_name(layout.ROOT_A).size_mib == plan.by_name(layout.ROOT_B).size_mib


def written_table(plan: layout.Layout, tmp_path: Path) -> dict:
    """The plan written to a sparse file by sfdisk, read back by sfdisk."""
    img = tmp_path / "disk.img"
    with img.open("wb") as fh:
        fh.truncate(plan.disk_mib * layout.MIB)
    subprocess.run(["sfdisk", "-q", "--no-reread", "--no-tell-kernel", str(img)],
                   input=plan.sfdisk_script(), text=True, check=True)
    return json.loads(subprocess.run(["sfdisk", "--json", str(img)], capture_output=True,
                                     text=True, check=True).stdout)["partitiontable"]


def test_sfdisk_writes_the_planned_table(tmp_path: Path) -> None:
    uuids = {layout.ROOT_A: "11111111-2222-3333-4444-555555555555"}
    plan = layout.plan(SIZES, uuids)
    table = written_table(plan, tmp_path)
    assert table["label"] == "gpt"
    got = [(p["name"], p["start"] // 2048, p["size"] // 2048, p["type"]) for p in table["partitions"]]
    assert got == [(p.name, p.start_mib, p.size_mib, p.type_guid) for p in plan.partitions]
    assert table["partitions"][1]["uuid"] == uuids[layout.ROOT_A].upper()


def test_raspberry_pi_mbr_as_the_firmware_reads_it(tmp_path: Path) -> None:
    """The Pi boards' table: MBR, FAT32 (LBA) boot partition first and flagged bootable, then
    three Linux partitions, and PARTUUIDs `<disk id>-<NN>` that the boot script and fstab use."""
    plan = layout.plan(SIZES, table="dos", disk_id="534d4f53")
    assert plan.disk_mib == 1 + 64 + 2 * 2560 + 512  # no backup GPT at the end
    assert [p.uuid for p in plan.partitions] == [f"534d4f53-0{n}" for n in (1, 2, 3, 4)]
    table = written_table(plan, tmp_path)
    assert table["label"] == "dos"
    assert table["id"] == "0x534d4f53"
    got = [(p["start"] // 2048, p["size"] // 2048, p["type"], p.get("bootable", False))
           for p in table["partitions"]]
    assert got == [(1, 64, "c", True), (65, 2560, "83", False), (2625, 2560, "83", False),
                   (5185, 512, "83", False)]


def test_the_data_partition_is_laid_out_by_the_boot_time_tmpfiles_file(tmp_path: Path) -> None:
    """The build lays out /data with systemd-tmpfiles from the file smartos-prepare applies at
    every boot (overlays/common), owners resolved in the image's /etc: the two cannot differ."""
    from rich.console import Console
    from smartos_image import stages
    from smartos_image.config import load_config
    from smartos_image.context import Context

    from tests.conftest import REPO, needs_root

    needs_root()  # ownership
    ctx = Context(config=load_config(), workdir=tmp_path, logfile=tmp_path / "log", console=Console())
    layout_file = ctx.rootfs / stages.DATA_LAYOUT
    layout_file.parent.mkdir(parents=True)
    layout_file.write_text((REPO / "overlays/common" / stages.DATA_LAYOUT).read_text())
    (ctx.rootfs / "etc").mkdir()
    (ctx.rootfs / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n"
                                           "homeassistant:x:8123:8123::/data/homeassistant:/bin/false\n")
    (ctx.rootfs / "etc/group").write_text("root:x:0:\nhomeassistant:x:8123:\nsmartos-admin:x:990:admin\n")
    stages.prepare_data(ctx)
    data = tmp_path / "data"
    made = {p.name: (p.stat().st_uid, p.stat().st_gid, oct(p.stat().st_mode & 0o7777))
            for p in data.iterdir() if p.is_dir()}
    wanted = {}
    for line in layout_file.read_text().splitlines():
        if line.startswith("d /data/"):
            _, path, mode, user, group, _ = line.split()
            ids = {"root": 0, "homeassistant": 8123, "smartos-admin": 990}
            wanted[path.removeprefix("/data/")] = (ids[user], ids[group], oct(int(mode, 8)))
    assert made == wanted | {"journal": (0, 0, "0o755")}
    assert (data / "smartos/README").is_file()
