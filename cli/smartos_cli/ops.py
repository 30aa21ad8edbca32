"""What the agent serves: each D-Bus method and the library function behind it."""

from __future__ import annotations

from typing import Any

from . import firewall, homeassistant
from .agent import Caller, Op
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


def _power(verb: str):  # type: ignore[no-untyped-def]
    def power(caller: Caller) -> dict[str, Any]:
        # --no-block: the reply reaches the caller before the machine goes down
        run(["systemctl", "--no-block", verb])
        return {"scheduled": verb}
    return power


_FW_ARGS = (("ports", "s"), ("source", "s"), ("client", "s"), ("force", "b"))

OPS: list[Op] = [
    Op("Firewall", "Allow", _FW_ARGS, _firewall_add("allow")),
    Op("Firewall", "Deny", _FW_ARGS, _firewall_add("deny")),
    Op("Firewall", "Remove", (("number", "u"), ("client", "s"), ("force", "b")), _firewall_remove),
    Op("HomeAssistant", "Control", (("verb", "s"),), _ha_control),
    Op("HomeAssistant", "CheckConfig", (), _ha_check_config, audited=False),
    Op("System", "Reboot", (), _power("reboot")),
    Op("System", "Shutdown", (), _power("poweroff")),
]

