"""Stable names for every USB stick Home Assistant recognises, from the release being built.

Home Assistant's integrations declare the USB devices they serve in their manifests (`usb`: vid,
pid, and globs on the description, manufacturer and serial number); hassfest collects them in
homeassistant/generated/usb.py, which hass.derive reads from the wheel. Each becomes an entry of
the radios role's `radios__homeassistant_sticks`, rendered after the curated table in
roles/radios/defaults/main.yml and less preferred than any entry of it, so a stick both know
keeps its curated name in SMARTOS_RADIO (it gets both links).

Home Assistant compares lower-cased values with fnmatch; udev's globs are case-sensitive, so
each letter becomes a class ([sS]). Its description is pyserial's: the USB product string, or
"product - interface" when the interface has a string of its own (the Nortek HUSBZB-1 names
its Zigbee and Z-Wave halves there), so a description glob is tried on either.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from .errors import SmartOSError

# Integrations whose sticks get the generic link of their kind (/dev/zigbee, /dev/zwave)
KINDS = {"zha": "zigbee", "homeassistant_sky_connect": "zigbee", "homeassistant_connect_zbt1": "zigbee",
         "homeassistant_connect_zbt2": "zigbee", "zwave_js": "zwave"}
_HEX4 = re.compile(r"[0-9A-Fa-f]{4}")
_UNSAFE = re.compile(r'["\\|\[\]\n]')  # not expressible in (or meaningful to) a udev rule value


def udev_glob(pattern: str, where: str) -> str:
    """A udev glob matching what Home Assistant's lower-cased fnmatch pattern matches."""
    if _UNSAFE.search(pattern):
        raise SmartOSError(f"{where}: the USB matcher pattern {pattern!r} cannot be written as a udev "
                           "rule", hint="Home Assistant's manifests changed shape: add the stick to "
                           "radios__sticks by hand and teach image/radios.py the new pattern")
    return "".join(f"[{c}{c.upper()}]" if c.isascii() and c.isalpha() else c for c in pattern.lower())


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def sticks(matchers: Iterable[dict[str, Any]]) -> list[dict[str, str]]:
    """Entries for radios__homeassistant_sticks, one per matcher, in Home Assistant's order."""
    entries = []
    for m in matchers:
        domain = str(m.get("domain", ""))
        where = f"Home Assistant's USB matcher for {domain or '?'} {m}"
        vid, pid = str(m.get("vid", "")), str(m.get("pid", ""))
        if not domain or not _HEX4.fullmatch(vid) or pid and not _HEX4.fullmatch(pid):
            raise SmartOSError(f"{where}: no domain or vid, or a vid/pid that is not 4 hex digits")
        globs = {key: udev_glob(str(m[key]), where) if m.get(key) else ""
                 for key in ("description", "manufacturer", "serial_number")}
        shown = " ".join(str(m[k]) for k in ("description", "manufacturer") if m.get(k))
        entries.append({
            "name": _slug(f"{domain}-{vid}-{pid}-{shown.replace('*', ' ')}"),
            "description": f"{domain} (Home Assistant's USB discovery): {vid.lower()}:{pid.lower() or '*'}"
                           f"{f' {shown}' if shown else ''}",
            "kind": KINDS.get(domain, domain.replace("_", "-")),
            "vendor_id": vid.lower(),
            "product_id": pid.lower(),
            "description_glob": globs["description"],
            "manufacturer_glob": globs["manufacturer"],
            "serial_glob": globs["serial_number"],
        })
    return entries
