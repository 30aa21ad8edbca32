"""What the agent serves: each D-Bus method and the library function behind it."""

from __future__ import annotations

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


def _ha_restart(caller: Caller) -> dict[str, Any]:
    return homeassistant.control("restart")


def _ha_check_config(caller: Caller) -> dict[str, Any]:
    return homeassistant.check_config()


def _admin_gid() -> int | None:
    try:
        return grp.getgrnam(ADMIN_GROUP).gr_gid  # the admin lists and copies backups
    except KeyError:
        return None


def _device_hooks() -> backup.Hooks:
    def start() -> None:
        # the firewall's rule files were rendered from the restored settings: the kernel gets
        # exactly what `firewall show` prints (a refused ruleset fails the restore, undone)
        run(["nft", "-f", str(PATHS.nftables_conf)])
        if (PATHS.state / "hostname").exists():
            run([network.APPLY_HOSTNAME], check=False)
        unit = f"wg-quick@{vpn.INTERFACE}.service"
        run(["systemctl", "enable" if vpn.load(PATHS).enabled else "disable", "--now", unit], check=False)
        run(["systemctl", "try-restart", unit], check=False)
        run(["systemctl", "try-restart", f"wpa_supplicant@{network.WIFI_INTERFACE}.service"], check=False)
        homeassistant.start()

    ha = pwd.getpwnam(homeassistant.USER)
    return backup.Hooks(stop=homeassistant.stop, start=start,
                        owners={"homeassistant": (ha.pw_uid, ha.pw_gid)})


def _facts() -> dict[str, Any]:
    facts_file = Path("/etc/smartos/build.json")
    facts = json.loads(facts_file.read_text()) if facts_file.exists() else {}
    return {"smartos": facts.get("version"), "homeassistant": facts.get("homeassistant"),
            "board": facts.get("board")}


def _backup_create(caller: Caller, password: str) -> dict[str, Any]:
    """Into /data/backups only; "" for the device's backup key."""
    return backup.as_dict(backup.create(PATHS, password, facts=_facts(), group=_admin_gid()))


def _backup_create_default(caller: Caller) -> dict[str, Any]:
    """For Home Assistant's integration: no arguments, the device's backup key."""
    return backup.as_dict(backup.create(PATHS, "", facts=_facts(), group=_admin_gid()))


def _backup_key(caller: Caller) -> dict[str, Any]:
    return {"key": backup.device_key(PATHS), "path": str(PATHS.backup_key)}


def _backup_restore(caller: Caller, name: str, password: str) -> dict[str, Any]:
    return backup.restore(PATHS, backup.find(PATHS.backups, name), password, _device_hooks())


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


def _diagnostics(caller: Caller) -> dict[str, Any]:
    """The tarball travels in the reply; smartosctl writes it as the caller (no root write in a
    directory the caller chose)."""
    return diagnostics.bundle(PATHS.data)


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


def _update_install_newest(caller: Caller) -> dict[str, Any]:
    """The newest release of the configured channel: what the SmartOS integration may install."""
    return _update_install(caller, "", False, True)


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
    Op("HomeAssistant", "Restart", (), _ha_restart, integration=True),
    Op("HomeAssistant", "CheckConfig", (), _ha_check_config),
    Op("Backup", "Create", (("password", "s"),), _backup_create),
    Op("Backup", "CreateDefault", (), _backup_create_default, integration=True),
    Op("Backup", "Key", (), _backup_key),
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
    Op("Support", "Diagnostics", (), _diagnostics, audited=False),
    Op("Update", "Check", (), lambda caller: update.check(PATHS), audited=False, integration=True),
    Op("Update", "Status", (), lambda caller: update.status(PATHS), audited=False, integration=True),
    Op("Update", "Install", (("version", "s"), ("allow_downgrade", "b"), ("reboot", "b")),
       _update_install),
    Op("Update", "InstallNewest", (), _update_install_newest, integration=True),
    Op("Update", "Configure", (("key", "s"), ("value", "s")), _update_configure),
    Op("Update", "Auto", (), _update_auto),
    Op("System", "Reboot", (), _power("reboot"), integration=True),
    Op("System", "Shutdown", (), _power("poweroff"), integration=True),
]

