"""`smartosctl status`: the device at a glance, and what needs attention."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import homeassistant
from .backup import list_backups
from .paths import Paths

DISK_WARN_PERCENT = 90
BUILD_FACTS = Path("/etc/smartos/build.json")
THROTTLE_ALARM = "in0_lcrit_alarm"  # the Raspberry Pi firmware's undervoltage flag (rpi_volt)


@dataclass
class Disk:
    mount: str
    total_bytes: int
    used_bytes: int
    percent: float


@dataclass
class Status:
    hostname: str
    mdns_name: str
    os_version: str
    board: str
    slot: str | None
    homeassistant_version: str | None
    homeassistant_state: str
    homeassistant_answers: bool
    homeassistant_url: str
    uptime_seconds: int
    cpu_percent: float
    load: tuple[float, float, float]
    memory_total_bytes: int
    memory_used_percent: float
    disks: list[Disk]
    temperature_c: float | None
    addresses: dict[str, list[str]]
    undervoltage: bool | None
    last_backup: str | None = None
    radios: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def booted_slot(cmdline: str) -> str | None:
    """A or B, from the boot loader's rauc.slot= on the kernel command line."""
    for word in cmdline.split():
        if word.startswith("rauc.slot="):
            return word.split("=", 1)[1]
    return None


def answers(url: str, timeout: float = 3) -> bool:
    """HTTP 200 from url (Home Assistant's manifest, on loopback)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (loopback only)
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _temperature(psutil: Any) -> float | None:
    temps = psutil.sensors_temperatures() if hasattr(psutil, "sensors_temperatures") else {}
    for name in ("cpu_thermal", "coretemp", "k10temp", "soc_thermal", "acpitz"):
        if temps.get(name):
            return float(temps[name][0].current)
    return None


def _undervoltage(hwmon: Path = Path("/sys/class/hwmon")) -> bool | None:
    """The Pi's undervoltage alarm, or None where the board has no such sensor."""
    for dev in sorted(hwmon.glob("hwmon*")):
        name = (dev / "name").read_text().strip() if (dev / "name").exists() else ""
        if name == "rpi_volt" and (dev / THROTTLE_ALARM).exists():
            return (dev / THROTTLE_ALARM).read_text().strip() != "0"
    return None


def collect(data_mount: str = "/data") -> Status:
    import psutil

    facts = json.loads(BUILD_FACTS.read_text()) if BUILD_FACTS.exists() else {}
    hostname = socket.gethostname()
    disks = []
    for mount in ("/", data_mount):
        try:
            usage = psutil.disk_usage(mount)
        except OSError:
            continue
        disks.append(Disk(mount, usage.total, usage.used, usage.percent))
    addresses: dict[str, list[str]] = {}
    for nic, addrs in psutil.net_if_addrs().items():
        if nic == "lo":
            continue
        ips = [a.address.split("%")[0] for a in addrs if a.family in (socket.AF_INET, socket.AF_INET6)]
        if ips:
            addresses[nic] = ips
    memory = psutil.virtual_memory()
    ha_state = homeassistant.state()
    status = Status(
        hostname=hostname, mdns_name=f"{hostname}.local",
        os_version=str(facts.get("version", "unknown")), board=str(facts.get("board", "unknown")),
        slot=booted_slot(Path("/proc/cmdline").read_text()),
        homeassistant_version=facts.get("homeassistant"),
        homeassistant_state=ha_state,
        homeassistant_answers=ha_state == "active" and answers(homeassistant.URL),
        homeassistant_url=f"http://{hostname}.local:8123",
        uptime_seconds=int(time.time() - psutil.boot_time()),
        cpu_percent=psutil.cpu_percent(interval=0.5),
        load=psutil.getloadavg(),
        memory_total_bytes=memory.total, memory_used_percent=memory.percent,
        disks=disks, temperature_c=_temperature(psutil), addresses=addresses,
        undervoltage=_undervoltage(),
        last_backup=next((b.created for b in list_backups(Paths(data=Path(data_mount)).backups)), None),
    )
    status.radios = _radios()
    status.warnings = warnings(status)
    return status


def _radios() -> list[str]:
    """USB serial devices, by SmartOS name where the udev rules know them."""
    try:
        from .radio import list_radios

        return [f"{r.smartos_name or r.product or r.device} ({r.kind}, {r.device})" for r in list_radios()]
    except ImportError:  # pyudev missing: say nothing rather than fail the whole status
        return []


def warnings(status: Status) -> list[str]:
    out = [f"{d.mount} is {d.percent:.0f}% full" for d in status.disks if d.percent >= DISK_WARN_PERCENT]
    if status.homeassistant_state != "active":
        out.append(f"Home Assistant is {status.homeassistant_state}")
    elif not status.homeassistant_answers:
        out.append("Home Assistant's service runs but it does not answer on port 8123 (yet)")
    if status.undervoltage:
        out.append("undervoltage: the power supply is too weak (the Pi throttles)")
    if status.memory_used_percent >= 95:
        out.append(f"memory is {status.memory_used_percent:.0f}% used")
    return out
