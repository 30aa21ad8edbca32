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


PROBE_SCRIPT = Path(__file__).with_name("radio_probe.py")


def holders(device: str, proc: Path = Path("/proc")) -> dict[int, str]:
    """Processes (pid: command name) that have device open."""
    target = os.path.realpath(device)
    found: dict[int, str] = {}
    for pid_dir in proc.iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            for fd in (pid_dir / "fd").iterdir():
                if os.path.realpath(fd) == target:
                    found[int(pid_dir.name)] = (pid_dir / "comm").read_text().strip()
                    break
        except OSError:
            continue  # gone, or not ours to look at
    return found


def probe(device: str, stop_ha: bool, ha: Any, venv: str = "/opt/smartos/venv") -> dict[str, Any]:
    """Identify the firmware on device with Home Assistant's own radio libraries. Refuses while a
    process holds the port, unless that is Home Assistant and stop_ha: then it is stopped for the
    probe and started again afterwards."""
    import json
    import stat

    from . import sandbox
    from .errors import CtlError, Exit

    path = Path(device)
    if not path.exists() or not stat.S_ISCHR(path.stat().st_mode):
        raise CtlError(f"no serial device {device}", hint="smartosctl radio list")
    held = holders(device)
    ha_pid = ha.main_pid()
    others = {pid: name for pid, name in held.items() if pid != ha_pid and not ha.owns(pid)}
    if others:
        who = ", ".join(f"{name} (pid {pid})" for pid, name in others.items())
        raise CtlError(f"{device} is in use by {who}; nothing was sent to it", code=Exit.NOT_ALLOWED)
    restart = False
    if held:
        if not stop_ha:
            raise CtlError(f"Home Assistant is using {device}; nothing was sent to it",
                           hint="add --stop-ha to stop it for the probe (it is started again after)",
                           code=Exit.NOT_ALLOWED)
        ha.stop()
        restart = True
    # Home Assistant's venv may load code Home Assistant's user planted (its .pth names the
    # run-time package directory): it runs as a throwaway user that can open this one device.
    real = os.path.realpath(path)
    try:
        result = sandbox.run_sandboxed([f"{venv}/bin/python", "-I", PROBE_SCRIPT, real],
                                       [*sandbox.DEVICE_ONLY, f"DeviceAllow={real} rw"],
                                       description=f"SmartOS radio probe of {device}", timeout=300)
    finally:
        if restart:
            ha.start()
    try:
        answer = json.loads(result.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise CtlError(f"the probe failed: {result.stderr.strip()[-800:]}", code=Exit.FAILED) from None
    if not answer.get("stack"):
        raise CtlError(f"no Zigbee firmware answered on {device} (EZSP, Z-Stack, deCONZ tried)",
                       hint="a Z-Wave or Thread stick? Or another baud rate: " + "; ".join(answer["tried"]),
                       code=Exit.FAILED)
    answer["home_assistant_restarted"] = restart
    return dict(answer)
