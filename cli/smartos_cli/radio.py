"""`smartosctl radio list`: USB serial devices from the udev database (pyudev), with the stable
names SmartOS's udev rules gave them (roles/radios; docs/radios.md)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

GENERIC_LINKS = ("/dev/zigbee", "/dev/zwave")


@dataclass(frozen=True)
class Radio:
    device: str
    kind: str                  # zigbee, zwave, or unknown (a serial device no rule knows)
    smartos_name: str | None   # /dev/radios/<name>
    links: tuple[str, ...]     # /dev/radios/..., /dev/zigbee or /dev/zwave where they point here
    by_id: str | None
    vendor_id: str | None
    product_id: str | None
    manufacturer: str | None
    product: str | None
    serial: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def describe(device: str, properties: Mapping[str, str], dev_root: Path = Path("/dev")) -> Radio:
    """A radio from one tty device's udev properties (as `udevadm info` lists them)."""
    links = properties.get("DEVLINKS", "").split()
    ours = [link for link in links if link.startswith(f"{dev_root}/radios/")]
    for generic in GENERIC_LINKS:
        path = dev_root / Path(generic).name
        if path.exists() and os.path.realpath(path) == os.path.realpath(device):
            ours.append(str(path))
    return Radio(
        device=device,
        kind=properties.get("SMARTOS_RADIO_KIND", "unknown"),
        smartos_name=properties.get("SMARTOS_RADIO"),
        links=tuple(ours),
        by_id=next((link for link in links if "/serial/by-id/" in link), None),
        vendor_id=properties.get("ID_VENDOR_ID") or properties.get("ID_USB_VENDOR_ID"),
        product_id=properties.get("ID_MODEL_ID") or properties.get("ID_USB_MODEL_ID"),
        manufacturer=properties.get("ID_VENDOR_FROM_DATABASE") or properties.get("ID_USB_VENDOR"),
        product=(properties.get("ID_MODEL") or properties.get("ID_USB_MODEL") or "").replace("_", " ")
        or None,
        serial=properties.get("ID_SERIAL_SHORT") or properties.get("ID_USB_SERIAL_SHORT"),
    )


def usb_serial(devices: Iterable[Any]) -> list[tuple[str, dict[str, str]]]:
    """(device node, properties) of each tty on a USB bus among pyudev devices."""
    found = []
    for dev in devices:
        props = dict(dev.properties)
        if dev.device_node and (props.get("ID_BUS") == "usb" or props.get("ID_USB_VENDOR_ID")):
            found.append((str(dev.device_node), props))
    return sorted(found)


def list_radios() -> list[Radio]:
    import pyudev

    context = pyudev.Context()
    return [describe(node, props) for node, props in usb_serial(context.list_devices(subsystem="tty"))]
