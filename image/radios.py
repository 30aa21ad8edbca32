"""Stable names for every USB stick Home Assistant recognises, from the release being built.

Home Assistant's integrations declare the USB devices they serve in their manifests (`usb`: vid,
pid, and globs on the description, manufacturer and serial number); hassfest collects them in
homeassistant/generated/usb.py, which hass.derive reads from the wheel. The venv stage writes
them as udev rules into the root slot (RULES), next to the release they come from: an update
that brings a new Home Assistant brings its rules. The radios role's curated table
(/etc/udev/rules.d/70-smartos-radios.rules) runs after this file and wins: its link priorities
are positive, these negative, so a stick both know keeps its curated name in SMARTOS_RADIO and
/dev/zigbee (it gets both /dev/radios links).

Home Assistant compares lower-cased values with fnmatch; udev's globs are case-sensitive, so
each letter becomes a class ([sS]). Its description is pyserial's: the USB product string, or
"product - interface" when the interface has a string of its own (the Nortek HUSBZB-1 names
its Zigbee and Z-Wave halves there), so a description glob is tried on either.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from .errors import SmartOSError

RULES = "usr/lib/udev/rules.d/69-smartos-homeassistant-radios.rules"
ROLE_DEFAULTS = Path(__file__).resolve().parent.parent / "roles/radios/defaults/main.yml"

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
    """One entry per matcher, in Home Assistant's order (its first is the most preferred)."""
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


def rules(entries: list[dict[str, str]], release: str, defaults: Path = ROLE_DEFAULTS) -> str:
    """The udev rules file for sticks(): the same group, mode, links and udev database keys as
    the radios role's rules, in Home Assistant's order of preference (its first matcher wins a
    contested generic link), all below the curated table."""
    role = yaml.safe_load(defaults.read_text())
    group, mode = role["radios__group"], role["radios__mode"]
    out = [f"# Stable names for the USB sticks Home Assistant {release} recognises: the USB matchers",
           "# of its integration manifests (homeassistant/generated/usb.py), written by the image",
           "# build (image/radios.py, docs/radios.md). 70-smartos-radios.rules, the curated table,",
           "# runs after this file and wins (its link priorities are positive, these negative).",
           "# ID_VENDOR_ID and ID_MODEL_ID come from 60-serial.rules (usb_id), so a rule can test",
           "# the interface's string on the USB interface or the product string on the USB device.",
           "",
           'ACTION=="remove", GOTO="smartos_homeassistant_radios_end"', ""]
    for priority, stick in zip(range(-len(entries), 0), reversed(entries), strict=True):
        on_device = [f'ATTRS{{{attr}}}=="{stick[key]}"' for attr, key in
                     (("manufacturer", "manufacturer_glob"), ("serial", "serial_glob")) if stick[key]]
        # The description is the product string, or "product - interface" (pyserial): the
        # interface's string is on another parent than manufacturer and serial.
        variants = [[f'ATTRS{{product}}=="{stick["description_glob"]}"', *on_device]]
        if not stick["description_glob"]:
            variants = [on_device]
        elif not on_device:
            variants.append([f'ATTRS{{interface}}=="{stick["description_glob"]}"'])
        links = [f'SYMLINK+="radios/{stick["name"]}"']
        if stick["kind"] in ("zigbee", "zwave"):
            links.append(f'SYMLINK+="{stick["kind"]}"')
        out.append(f"# {stick['description']}")
        for match in variants:
            keys = ['SUBSYSTEM=="tty"', f'ENV{{ID_VENDOR_ID}}=="{stick["vendor_id"]}"']
            if stick["product_id"]:
                keys.append(f'ENV{{ID_MODEL_ID}}=="{stick["product_id"]}"')
            out.append(", ".join(keys + match) + ", \\")
            out.append(f'  GROUP="{group}", MODE="{mode}", OPTIONS+="link_priority={priority}", \\')
            out.append(f"  {', '.join(links)}, \\")
            out.append(f'  ENV{{SMARTOS_RADIO}}="{stick["name"]}", '
                       f'ENV{{SMARTOS_RADIO_KIND}}="{stick["kind"]}"')
        out.append("")
    out.append('LABEL="smartos_homeassistant_radios_end"')
    return "\n".join(out) + "\n"
