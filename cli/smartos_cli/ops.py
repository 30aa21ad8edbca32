"""What the agent serves: each D-Bus method and the library function behind it."""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
from pathlib import Path
from typing import Any

from . import backup, diagnostics, firewall, homeassistant, network, radio, update, vpn
from .agent import ADMIN_GROUP, Caller, Op
from .errors import CtlError
from .paths import Paths
from .run import run

PATHS = Paths()


def _firewall_add(action: str):  # type: ignore[no-untyped-def]
    def add(caller: Caller, ports: str, source: str, client: str, force: bool) -> dict[str, Any]:
        rule = firewall.parse_rule(action, ports, source or None)
        return firewall.add(PATHS, rule, client=client or None, force=force).as_dict()
    return add


def _firewall_remove(caller: Caller, number: int, client: str, force: bool) -> dict[str, Any]:
    return firewall.remove(PATHS, number, client=client or None, force=force).as_dict()


def _ha_control(caller: Caller, verb: str) -> dict[str, Any]:
    return homeassistant.control(verb)


def _ha_check_config(caller: Caller) -> dict[str, Any]:
    return homeassistant.check_config()


def _backup_dir(target_dir: str) -> Path:
    if target_dir:
        return Path(target_dir)
    PATHS.backups.mkdir(mode=0o750, exist_ok=True)
    with contextlib.suppress(KeyError):  # the admin lists and copies them
        os.chown(PATHS.backups, 0, grp.getgrnam(ADMIN_GROUP).gr_gid)
    return PATHS.backups


def _device_hooks() -> backup.Hooks:
    def start() -> None:
        # /etc/systemd/network is a bind mount of /data/network: mount the restored directory
        # (the bind still holds the one moved aside), then let networkd read it
        run(["systemctl", "restart", "etc-systemd-network.mount"], check=False)
        run(["networkctl", "reload"], check=False)
        run(["nft", "-f", str(PATHS.nftables_conf)])  # the restored firewall rules
        homeassistant.start()

    ha = pwd.getpwnam(homeassistant.USER)
    return backup.Hooks(stop=homeassistant.stop, start=start,
                        owners={"homeassistant": (ha.pw_uid, ha.pw_gid)})


def _backup_create(caller: Caller, target_dir: str, password: str) -> dict[str, Any]:
    facts_file = Path("/etc/smartos/build.json")
    facts = json.loads(facts_file.read_text()) if facts_file.exists() else {}
    info = backup.create(PATHS.data, _backup_dir(target_dir), password,
                         facts={"smartos": facts.get("version"), "homeassistant": facts.get("homeassistant"),
                                "board": facts.get("board")})
    if not target_dir:
        os.chown(info.path, 0, PATHS.backups.stat().st_gid)
    return backup.as_dict(info)


def _backup_restore(caller: Caller, name: str, password: str) -> dict[str, Any]:
    return backup.restore(PATHS.data, backup.find(PATHS.backups, name), password, _device_hooks())


def _backup_delete(caller: Caller, name: str) -> dict[str, Any]:
    return backup.as_dict(backup.delete(PATHS.backups, name))


def _lan_address() -> str:
    """Where peers on the same network reach the box, when no public endpoint was given."""
    routes = json.loads(run(["ip", "-j", "route", "get", "192.0.2.1"], check=False).stdout or "[]")
    return str(routes[0].get("prefsrc")) if routes and routes[0].get("prefsrc") else \
        f"{os.uname().nodename}.local"


def _vpn_enable(caller: Caller, endpoint: str) -> dict[str, Any]:
    return vpn.enable(PATHS, vpn.Device(PATHS), endpoint or None).as_dict()


def _vpn_disable(caller: Caller) -> dict[str, Any]:
    return vpn.disable(PATHS, vpn.Device(PATHS)).as_dict()


def _vpn_add_peer(caller: Caller, name: str) -> dict[str, Any]:
    return vpn.add_peer(PATHS, vpn.Device(PATHS), name, _lan_address())


def _vpn_remove_peer(caller: Caller, name: str) -> dict[str, Any]:
    return vpn.remove_peer(PATHS, vpn.Device(PATHS), name).as_dict()


def _vpn_show(caller: Caller) -> dict[str, Any]:
    settings = vpn.load(PATHS)
    handshakes: dict[str, int] = {}
    if settings.enabled:
        dump = run(["wg", "show", vpn.INTERFACE, "dump"], check=False).stdout.splitlines()[1:]
        handshakes = {line.split("\t")[0]: int(line.split("\t")[4]) for line in dump if line.count("\t") >= 4}
    peers = [{**p, "latest_handshake": handshakes.get(p["public_key"], 0)}
             for p in settings.as_dict()["peers"]]
    return {**settings.as_dict(), "peers": peers}


def _diagnostics(caller: Caller, target_dir: str) -> dict[str, Any]:
    target = Path(target_dir)
    if not target.is_dir():
        raise CtlError(f"--to: {target_dir} is not a directory")
    user = pwd.getpwuid(caller.uid)
    return diagnostics.create(PATHS.data, target, owner=(user.pw_uid, user.pw_gid))


def _set_hostname(caller: Caller, name: str) -> dict[str, Any]:
    return network.set_hostname(PATHS, name)


def _set_wifi(caller: Caller, ssid: str, password: str, country: str) -> dict[str, Any]:
    return network.set_wifi(PATHS, ssid, password, country)


def _radio_probe(caller: Caller, device: str, stop_ha: bool) -> dict[str, Any]:
    return radio.probe(device, stop_ha, homeassistant)


def _schedule(verb: str) -> None:
    """reboot or poweroff, queued (--no-block): the reply reaches the caller before the machine
    goes down."""
    run(["systemctl", "--no-block", verb])


def _power(verb: str):  # type: ignore[no-untyped-def]
    def power(caller: Caller) -> dict[str, Any]:
        _schedule(verb)
        return {"scheduled": verb}
    return power


def _update_install(caller: Caller, version: str, allow_downgrade: bool, reboot: bool) -> dict[str, Any]:
    result = update.install(PATHS, version, allow_downgrade)
    if reboot:
        _schedule("reboot")
    return {**result, "rebooting": reboot}


def _update_configure(caller: Caller, key: str, value: str) -> dict[str, Any]:
    if key not in ("channel", "policy", "url"):
        raise CtlError(f"unknown update setting {key!r} (channel, policy, url)")
    return update.change_settings(PATHS, **{key: value}).__dict__


def _update_auto(caller: Caller) -> dict[str, Any]:
    result = update.auto(PATHS)
    if result.get("result") == "installed":
        _schedule("reboot")
    return result


_FW_ARGS = (("ports", "s"), ("source", "s"), ("client", "s"), ("force", "b"))

OPS: list[Op] = [
    Op("Firewall", "Allow", _FW_ARGS, _firewall_add("allow")),
    Op("Firewall", "Deny", _FW_ARGS, _firewall_add("deny")),
    Op("Firewall", "Remove", (("number", "u"), ("client", "s"), ("force", "b")), _firewall_remove),
    Op("HomeAssistant", "Control", (("verb", "s"),), _ha_control),
    Op("HomeAssistant", "CheckConfig", (), _ha_check_config, audited=False),
    Op("Backup", "Create", (("target_dir", "s"), ("password", "s")), _backup_create),
    Op("Backup", "Restore", (("name", "s"), ("password", "s")), _backup_restore),
    Op("Backup", "Delete", (("name", "s"),), _backup_delete),
    Op("Vpn", "Enable", (("endpoint", "s"),), _vpn_enable),
    Op("Vpn", "Disable", (), _vpn_disable),
    Op("Vpn", "AddPeer", (("name", "s"),), _vpn_add_peer),
    Op("Vpn", "RemovePeer", (("name", "s"),), _vpn_remove_peer),
    Op("Vpn", "Show", (), _vpn_show, audited=False),
    Op("Network", "SetHostname", (("name", "s"),), _set_hostname),
    Op("Network", "SetWifi", (("ssid", "s"), ("password", "s"), ("country", "s")), _set_wifi),
    Op("Radio", "Probe", (("device", "s"), ("stop_ha", "b")), _radio_probe),
    Op("Support", "Diagnostics", (("target_dir", "s"),), _diagnostics, audited=False),
    Op("Update", "Check", (), lambda caller: update.check(PATHS), audited=False),
    Op("Update", "Status", (), lambda caller: update.status(PATHS), audited=False),
    Op("Update", "Install", (("version", "s"), ("allow_downgrade", "b"), ("reboot", "b")),
       _update_install),
    Op("Update", "Configure", (("key", "s"), ("value", "s")), _update_configure),
    Op("Update", "Auto", (), _update_auto),
    Op("System", "Reboot", (), _power("reboot")),
    Op("System", "Shutdown", (), _power("poweroff")),
]

