"""Partition layout: a boot partition (the ESP on x86-64, the firmware's FAT on a Raspberry Pi),
root slots A and B, and the data partition that survives updates.

x86-64 uses GPT. The Raspberry Pi boards use an MBR ("dos") table: the Pi 3's boot ROM reads
nothing else, and four primary partitions are all SmartOS needs. MBR has no partition names, so
there a partition's stable name is its PARTUUID, `<disk id>-<number>`, with a fixed disk id.

All offsets and sizes are in MiB; partitions start on 1 MiB boundaries. A GPT disk ends with 1 MiB
for the backup GPT.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import Partitions

MIB = 1024 * 1024
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
LINUX_TYPE = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
DOS_TYPES = {ESP_TYPE: "c", LINUX_TYPE: "83"}  # FAT32 (LBA) and Linux
FIRST_MIB = 1  # the MBR (and the primary GPT) live in the first MiB
BACKUP_GPT_MIB = 1


@dataclass(frozen=True)
class Partition:
    number: int
    name: str  # the GPT partition name (PARTLABEL); on MBR only SmartOS's own name for it
    type_guid: str
    start_mib: int
    size_mib: int
    uuid: str = ""  # PARTUUID: a GUID on GPT, `<disk id>-<NN>` on MBR

    @property
    def end_mib(self) -> int:
        return self.start_mib + self.size_mib


@dataclass(frozen=True)
class Layout:
    partitions: tuple[Partition, ...]
    disk_mib: int
    table: str = "gpt"  # or "dos"
    disk_id: str = ""  # MBR disk identifier, 8 hex digits

    def by_name(self, name: str) -> Partition:
        return next(p for p in self.partitions if p.name == name)

    def sfdisk_script(self) -> str:
        lines = [f"label: {self.table}", "unit: sectors", "sector-size: 512"]
        if self.table == "dos":
            lines.append(f"label-id: 0x{self.disk_id}")
        lines.append("")
        for p in self.partitions:
            attrs = f"start={p.start_mib * 2048}, size={p.size_mib * 2048}"
            if self.table == "dos":
                # The bootable flag on the FAT partition: U-Boot's boot-script search looks there.
                attrs += f", type={DOS_TYPES[p.type_guid]}" + (", bootable" if p.name == ESP else "")
            else:
                attrs += f', type={p.type_guid}, name="{p.name}"'
                if p.uuid:
                    attrs += f", uuid={p.uuid}"
            lines.append(attrs)
        return "\n".join(lines) + "\n"


ESP, ROOT_A, ROOT_B, DATA = "smartos-esp", "smartos-root-a", "smartos-root-b", "smartos-data"


def plan(sizes: Partitions, uuids: dict[str, str] | None = None, table: str = "gpt",
         disk_id: str = "") -> Layout:
    """Place the partitions back to back; data last so first boot can grow it to the disk's end."""
    uuids = uuids or {}
    order = [(ESP, ESP_TYPE, sizes.esp), (ROOT_A, LINUX_TYPE, sizes.root),
             (ROOT_B, LINUX_TYPE, sizes.root), (DATA, LINUX_TYPE, sizes.data)]
    parts, start = [], FIRST_MIB
    for number, (name, type_guid, size) in enumerate(order, start=1):
        uuid = f"{disk_id}-{number:02x}" if table == "dos" else uuids.get(name, "")
        parts.append(Partition(number, name, type_guid, start, size, uuid))
        start += size
    return Layout(tuple(parts), start + (BACKUP_GPT_MIB if table == "gpt" else 0), table, disk_id)
