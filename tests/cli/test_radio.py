"""smartosctl radio list: USB serial devices from the udev database.

No stick can be plugged into this machine: pyudev enumerates the real tty devices here (none on
a USB bus, so none is listed), and the description of a stick is checked against the udev
properties of a Sonoff ZBDongle-E as `udevadm info` shows them on a SmartOS device (recorded,
with SmartOS's rules applied). The rules themselves run under udev on the booted image."""

from __future__ import annotations

from pathlib import Path

import pyudev
from smartos_cli import radio

ZBDONGLE_E = {
    "DEVNAME": "/dev/ttyUSB0", "SUBSYSTEM": "tty", "ID_BUS": "usb",
    "ID_VENDOR_ID": "1a86", "ID_MODEL_ID": "55d4", "ID_VENDOR_FROM_DATABASE": "QinHeng Electronics",
    "ID_MODEL": "SONOFF_Zigbee_3.0_USB_Dongle_Plus_V2", "ID_SERIAL_SHORT": "20240123142233",
    "SMARTOS_RADIO": "sonoff-zbdongle-e", "SMARTOS_RADIO_KIND": "zigbee",
}


def test_only_usb_serial_devices_are_listed_from_the_real_udev_database() -> None:
    ttys = list(pyudev.Context().list_devices(subsystem="tty"))
    assert ttys, "this machine has tty devices (consoles, serial ports)"
    listed = radio.usb_serial(ttys)
    usb = [d for d in ttys if d.properties.get("ID_BUS") == "usb" and d.device_node]
    assert len(listed) == len(usb)


def test_a_stick_is_described_with_its_stable_names(tmp_path: Path) -> None:
    node = tmp_path / "ttyUSB0"
    node.touch()
    (tmp_path / "radios").mkdir()
    (tmp_path / "radios" / "sonoff-zbdongle-e").symlink_to(node)
    (tmp_path / "zigbee").symlink_to(node)
    (tmp_path / "zwave").symlink_to(tmp_path / "ttyACM0")  # another stick's
    by_id = "/dev/serial/by-id/usb-ITead_SONOFF_Zigbee_3.0_USB_Dongle_Plus_V2_20240123142233-if00-port0"
    props = {**ZBDONGLE_E, "DEVLINKS": f"{by_id} {tmp_path}/radios/sonoff-zbdongle-e {tmp_path}/zigbee"}
    r = radio.describe(str(node), props, dev_root=tmp_path)
    assert r.kind == "zigbee" and r.smartos_name == "sonoff-zbdongle-e"
    assert r.links == (f"{tmp_path}/radios/sonoff-zbdongle-e", f"{tmp_path}/zigbee")
    assert r.by_id == by_id
    assert (r.vendor_id, r.product_id, r.serial) == ("1a86", "55d4", "20240123142233")
    assert r.product == "SONOFF Zigbee 3.0 USB Dongle Plus V2"


def test_a_serial_device_no_rule_knows_is_unknown(tmp_path: Path) -> None:
    props = {"ID_BUS": "usb", "ID_VENDOR_ID": "10c4", "ID_MODEL_ID": "ea60", "DEVLINKS": ""}
    r = radio.describe("/dev/ttyUSB3", props, dev_root=tmp_path)
    assert r.kind == "unknown" and r.smartos_name is None and r.links == ()
