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
