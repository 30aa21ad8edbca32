"""`smartosctl network`: addresses, the hostname and Wi-Fi. Settings live on the data
partition so they survive updates: /data/smartos/hostname (applied at every boot by
smartos-hostname.service, before the network and mDNS start) and
/data/wifi/wifi.json (SSID, WPA2's hashed key, country), rendered to
/data/wifi/wpa_supplicant-wlan0.conf (read by wpa_supplicant@wlan0 when a Wi-Fi adapter is
present; roles/base)."""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import CtlError, Exit
from .files import write_atomically
from .paths import Paths
from .run import run

_HOSTNAME = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_PSK = re.compile(r"^[0-9a-f]{64}$")
WIFI_INTERFACE = "wlan0"
WIFI_SETTINGS = "wifi.json"
APPLY_HOSTNAME = "/usr/lib/smartos/apply-hostname"


def check_hostname(name: str) -> str:
    if not _HOSTNAME.fullmatch(name) or name.isdigit():
        raise CtlError(f"hostname: expected 1-63 lower-case letters, digits or '-', not starting or "
                       f"ending with '-' (it becomes NAME.local), got {name!r}")
    return name


def set_hostname(paths: Paths, name: str) -> dict[str, Any]:
    check_hostname(name)
    write_atomically(paths.state / "hostname", name + "\n", 0o644)
    run([APPLY_HOSTNAME])  # what every boot does with it (smartos-hostname.service)
    return {"hostname": name, "mdns_name": f"{name}.local"}


def wpa_psk(ssid: str, passphrase: str) -> str:
    """WPA2's pre-shared key (PBKDF2-SHA1 of the passphrase, salted with the SSID): stored
    instead of the passphrase, as wpa_passphrase does."""
    if not 8 <= len(passphrase) <= 63:
        raise CtlError("Wi-Fi password: expected 8-63 characters (WPA2)")
    return hashlib.pbkdf2_hmac("sha1", passphrase.encode(), ssid.encode(), 4096, 32).hex()


def wifi_config(ssid: str, passphrase: str, country: str) -> str:
    """wpa_supplicant's file for a network (checked first; every mistake named)."""
    return render_wifi(WifiSettings(ssid, wpa_psk(ssid, passphrase), country))


@dataclass(frozen=True)
class WifiSettings:
    """/data/wifi/wifi.json: what wpa_supplicant-wlan0.conf is rendered from (root only: the
    hashed key lets anyone onto the network)."""

    ssid: str
    psk: str
    country: str

    def __post_init__(self) -> None:
        if not 1 <= len(self.ssid.encode()) <= 32:
            raise CtlError(f"SSID: expected 1-32 bytes, got {self.ssid!r}")
        if not _COUNTRY.fullmatch(self.country):
            raise CtlError(f"--country: expected a two-letter country code such as DE or US (the "
                           f"radio may only transmit with it), got {self.country!r}")
        if not _PSK.fullmatch(self.psk):
            raise CtlError("psk: expected WPA2's key as 64 hexadecimal digits")

    def as_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"


def parse_wifi(text: str, where: str = "wifi.json") -> WifiSettings:
    try:
        raw = json.loads(text)
        if not isinstance(raw, dict) or set(raw) != {"ssid", "psk", "country"} or \
                not all(isinstance(v, str) for v in raw.values()):
            raise CtlError("expected ssid, psk and country (text)")
        return WifiSettings(raw["ssid"], raw["psk"], raw["country"])
    except (ValueError, CtlError) as exc:
        raise CtlError(f"{where}: {exc}") from None


def render_wifi(settings: WifiSettings) -> str:
    # the SSID as hex (unquoted): wpa_supplicant reads a quoted one without escapes, so a '"',
    # a '\\' or a byte beyond ASCII would reach it as something else
    return "\n".join([
        "# Written by smartosctl network wifi from wifi.json (the password is stored as WPA2's "
        "hashed key).",
        "ctrl_interface=/run/wpa_supplicant", "update_config=0", f"country={settings.country}",
        "", "network={", f"    ssid={settings.ssid.encode().hex()}", f"    psk={settings.psk}",
        "    key_mgmt=WPA-PSK WPA-PSK-SHA256", "}", ""])


def parse_hostname(text: str, where: str = "hostname") -> str:
    """/data/smartos/hostname: one line, the name (as apply-hostname reads it)."""
    name = text.removesuffix("\n")
    try:
        return check_hostname(name)
    except CtlError as exc:
        raise CtlError(f"{where}: {exc}") from None


def write_wifi(paths: Paths, settings: WifiSettings) -> None:
    """wifi.json and the wpa_supplicant file rendered from it (both root only)."""
    write_atomically(paths.wifi / WIFI_SETTINGS, settings.as_json(), 0o600)
    write_atomically(paths.wifi / f"wpa_supplicant-{WIFI_INTERFACE}.conf", render_wifi(settings), 0o600)


def set_wifi(paths: Paths, ssid: str, passphrase: str, country: str,
             sys_net: Path = Path("/sys/class/net")) -> dict[str, Any]:
    settings = WifiSettings(ssid, wpa_psk(ssid, passphrase), country)  # every mistake named first
    if not Path("/usr/sbin/wpa_supplicant").exists() or not (sys_net / WIFI_INTERFACE).exists():
        raise CtlError(f"this box has no Wi-Fi adapter ({WIFI_INTERFACE}); nothing changed",
                       hint="use Ethernet, or a board with Wi-Fi (Raspberry Pi)", code=Exit.UNAVAILABLE)
    write_wifi(paths, settings)
    run(["systemctl", "restart", f"wpa_supplicant@{WIFI_INTERFACE}.service"])
    return {"ssid": ssid, "country": country, "interface": WIFI_INTERFACE}


def show() -> dict[str, Any]:
    """Addresses, default routes, DNS servers and the hostname (no root needed)."""
    addresses = json.loads(run(["ip", "-j", "address"]).stdout or "[]")
    routes = json.loads(run(["ip", "-j", "route", "show", "default"]).stdout or "[]")
    dns = run(["resolvectl", "dns"], check=False).stdout.strip().splitlines()
    hostname = os.uname().nodename
    return {
        "hostname": hostname, "mdns_name": f"{hostname}.local",
        "interfaces": [{"name": a["ifname"], "state": a.get("operstate"), "mac": a.get("address"),
                        "addresses": [f"{i['local']}/{i['prefixlen']}" for i in a.get("addr_info", [])]}
                       for a in addresses if a["ifname"] != "lo"],
        "default_routes": [{"via": r.get("gateway"), "dev": r.get("dev")} for r in routes],
        "dns": [line for line in dns if ":" in line and line.split(":", 1)[1].strip()],
    }
