"""GPT partition layout: an ESP, root slots A and B, and the data partition that survives updates.

All offsets and sizes are in MiB; partitions start on 1 MiB boundaries. The disk ends with 1 MiB
for the backup GPT.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import Partitions

MIB = 1024 * 1024
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
LINUX_TYPE = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
FIRST_MIB = 1  # the protective MBR and primary GPT live in the first MiB
BACKUP_GPT_MIB = 1


@dataclass(frozen=True)
class Partition:
    number: int
    name: str  # the GPT partition name (PARTLABEL), stable across updates
    type_guid: str
    start_mib: int
    size_mib: int
    uuid: str = ""

    @property
    def end_mib(self) -> int:
        return self.start_mib + self.size_mib


@dataclass(frozen=True)
class Layout:
    partitions: tuple[Partition, ...]
    disk_mib: int

    def by_name(self, name: str) -> Partition:
        return next(p for p in self.partitions if p.name == name)

    def sfdisk_script(self) -> str:
        lines = ["label: gpt", "unit: sectors", "sector-size: 512", ""]
        for p in self.partitions:
            attrs = f"start={p.start_mib * 2048}, size={p.size_mib * 2048}, type={p.type_guid}"
            attrs += f', name="{p.name}"'
            if p.uuid:
                attrs += f", uuid={p.uuid}"
            lines.append(attrs)
        return "\n".join(lines) + "\n"


ESP, ROOT_A, ROOT_B, DATA = "smartos-esp", "smartos-root-a", "smartos-root-b", "smartos-data"


def plan(sizes: Partitions, uuids: dict[str, str] | None = None) -> Layout:
    """Place the partitions back to back; data last so first boot can grow it to the disk's end."""
    uuids = uuids or {}
    order = [(ESP, ESP_TYPE, sizes.esp), (ROOT_A, LINUX_TYPE, sizes.root),
             (ROOT_B, LINUX_TYPE, sizes.root), (DATA, LINUX_TYPE, sizes.data)]
    parts, start = [], FIRST_MIB
    for number, (name, type_guid, size) in enumerate(order, start=1):
        parts.append(Partition(number, name, type_guid, start, size, uuids.get(name, "")))
        start += size
    return Layout(tuple(parts), start + BACKUP_GPT_MIB)
