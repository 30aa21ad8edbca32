"""smartos-agent: the one root-owned door for smartosctl's state-changing actions, on D-Bus.

smartosctl runs as the admin; whatever needs root (the firewall, Home Assistant's service,
reboots, backups, the VPN) it asks of this service on the system bus. The bus's policy
(/usr/share/dbus-1/system.d/org.smartos.Agent1.conf) says who may call which interface, and the
agent checks the caller again (by uid, from the bus) before anything runs: members of
smartos-admin and root may call everything; Home Assistant's user (the SmartOS integration) only
the methods whose Op says `integration=True` (docs/security.md says why each). The policy file is
rendered from the same ops table (bus_policy), so the two cannot disagree. Every call that
changes state leaves an audit entry (audit.py).

Object /org/smartos/Agent1; interfaces org.smartos.Agent1.<Area>; each method takes typed
arguments and returns a JSON document (one string). Failures are D-Bus errors named
org.smartos.Agent1.Error.<BadInput|Failed|NotAllowed|Unavailable> whose text is a JSON object
{"message", "hint"}. `busctl introspect org.smartos.Agent1 /org/smartos/Agent1` lists it all.
"""

from __future__ import annotations

import asyncio
import grp
import json
import logging
import pwd
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import quoteattr

from . import audit
from .errors import CtlError, Exit

BUS_NAME = "org.smartos.Agent1"
PATH = "/org/smartos/Agent1"
ADMIN_GROUP = "smartos-admin"
INTEGRATION_USER = "homeassistant"

log = logging.getLogger("smartos-agent")


@dataclass(frozen=True)
class Caller:
    uid: int
    name: str


@dataclass(frozen=True)
class Op:
    """One D-Bus method: `area` names its interface, `audited` whether it changes state,
    `integration` whether Home Assistant's user may call it (besides root and the admin)."""

    area: str
    name: str
    args: tuple[tuple[str, str], ...]  # (argument name, D-Bus type)
    fn: Callable[..., Any]             # fn(caller, **arguments) -> a JSON-able result
    audited: bool = True
    integration: bool = False

    @property
    def interface(self) -> str:
        return f"{BUS_NAME}.{self.area}"

    @property
    def signature(self) -> str:
        return "".join(sig for _, sig in self.args)

    @property
    def action(self) -> str:
        """The audit log's name for it, e.g. firewall.allow."""
        return f"{self.area.lower()}.{self.name[0].lower()}{self.name[1:]}".lower()


def introspection(ops: list[Op]) -> str:
    areas: dict[str, list[Op]] = {}
    for op in ops:
        areas.setdefault(op.interface, []).append(op)
    parts = ['<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN" '
             '"http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">', "<node>",
             '<interface name="org.freedesktop.DBus.Introspectable"><method name="Introspect">'
             '<arg name="xml" type="s" direction="out"/></method></interface>']
    for interface, members in areas.items():
        parts.append(f"<interface name={quoteattr(interface)}>")
        for op in members:
            parts.append(f"<method name={quoteattr(op.name)}>")
            parts += [f'<arg name={quoteattr(n)} type={quoteattr(t)} direction="in"/>' for n, t in op.args]
            parts.append('<arg name="result_json" type="s" direction="out"/></method>')
        parts.append("</interface>")
    parts.append("</node>")
    return "\n".join(parts)


def allowed(caller: Caller, op: Op) -> bool:
    if caller.uid == 0:
        return True
    try:
        admins = grp.getgrnam(ADMIN_GROUP)
    except KeyError:
        admins = None
    if admins is not None:
        user = pwd.getpwuid(caller.uid)
        if caller.name in admins.gr_mem or user.pw_gid == admins.gr_gid:
            return True
    return caller.name == INTEGRATION_USER and op.integration


def bus_policy(ops: list[Op]) -> str:
    """The system bus's policy for the agent: the first gate, before allowed() checks again."""
    member = '    <allow send_destination="{bus}" send_interface="{interface}" send_member="{name}"/>'
    integration = "\n".join(member.format(bus=BUS_NAME, interface=op.interface, name=op.name)
                             for op in ops if op.integration)
    return f"""<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<!-- Who may call smartos-agent: root and the {ADMIN_GROUP} group everything; Home Assistant's
     user (the SmartOS integration) the methods listed for it; nobody else anything.
     Rendered from smartos_cli.ops (agent.bus_policy); the agent checks every caller again. -->
<busconfig>
  <policy user="root">
    <allow own="{BUS_NAME}"/>
    <allow send_destination="{BUS_NAME}"/>
  </policy>
  <policy group="{ADMIN_GROUP}">
    <allow send_destination="{BUS_NAME}"/>
  </policy>
  <policy user="{INTEGRATION_USER}">
    <allow send_destination="{BUS_NAME}" send_interface="org.freedesktop.DBus.Introspectable"/>
{integration}
  </policy>
  <policy context="default">
    <deny send_destination="{BUS_NAME}"/>
  </policy>
</busconfig>
"""


class Agent:
    """Serves ops on a connected dbus-fast MessageBus. State-changing calls run one at a time
    (in a worker thread, so the bus keeps answering)."""

    def __init__(self, bus: Any, ops: list[Op]) -> None:
        self.bus = bus
        self.ops = {(op.interface, op.name): op for op in ops}
        self.xml = introspection(ops)
        self.lock = threading.Lock()

    def handle(self, msg: Any) -> Any:
        from dbus_fast import Message, MessageType

        if msg.message_type != MessageType.METHOD_CALL or msg.path != PATH:
            return None
        if msg.interface == "org.freedesktop.DBus.Introspectable" and msg.member == "Introspect":
            return Message.new_method_return(msg, "s", [self.xml])
        op = self.ops.get((msg.interface, msg.member))
        if op is None:
            return Message.new_error(msg, "org.freedesktop.DBus.Error.UnknownMethod",
                                     f"no method {msg.interface}.{msg.member}")
        if msg.signature != op.signature:
            return Message.new_error(msg, "org.freedesktop.DBus.Error.InvalidArgs",
                                     f"{op.name} takes ({op.signature}), got ({msg.signature})")
        asyncio.get_running_loop().create_task(self._serve(msg, op))
        return True

    async def _caller(self, sender: str) -> Caller:
        from dbus_fast import Message

        reply = await self.bus.call(Message(
            destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus", member="GetConnectionUnixUser", signature="s",
            body=[sender]))
        uid = int(reply.body[0])
        try:
            name = pwd.getpwuid(uid).pw_name
        except KeyError:
            name = str(uid)
        return Caller(uid, name)

    def _run(self, op: Op, caller: Caller, kwargs: dict[str, Any]) -> Any:
        if not op.audited:
            return op.fn(caller, **kwargs)
        with self.lock:
            try:
                result = op.fn(caller, **kwargs)
            except CtlError as exc:
                audit.record(op.action, caller.name, caller.uid, kwargs, f"error: {exc.message}")
                raise
            except Exception as exc:
                audit.record(op.action, caller.name, caller.uid, kwargs, f"error: {exc!r}")
                raise
            audit.record(op.action, caller.name, caller.uid, kwargs, "ok")
            return result

    async def _serve(self, msg: Any, op: Op) -> None:
        from dbus_fast import Message

        kwargs = {name: value for (name, _), value in zip(op.args, msg.body, strict=True)}
        try:
            caller = await self._caller(msg.sender)
            if not allowed(caller, op):
                raise CtlError(f"{caller.name} may not call {op.interface}.{op.name}",
                               hint=f"smartosctl is for members of the {ADMIN_GROUP} group",
                               code=Exit.NOT_ALLOWED)
            result = await asyncio.get_running_loop().run_in_executor(None, self._run, op, caller, kwargs)
            reply = Message.new_method_return(msg, "s", [json.dumps(result)])
        except CtlError as exc:
            reply = Message.new_error(msg, f"{BUS_NAME}.Error.{_ERROR_NAMES[exc.code]}",
                                      json.dumps({"message": exc.message, "hint": exc.hint}))
        except Exception as exc:  # a bug: tell the caller, keep serving
            log.exception("%s.%s failed", op.interface, op.name)
            reply = Message.new_error(msg, f"{BUS_NAME}.Error.Failed",
                                      json.dumps({"message": f"internal error: {exc!r}", "hint": None}))
        await self.bus.send(reply)


_ERROR_NAMES = {Exit.BAD_INPUT: "BadInput", Exit.FAILED: "Failed", Exit.NOT_ALLOWED: "NotAllowed",
                Exit.UNAVAILABLE: "Unavailable", Exit.OK: "Failed"}
ERROR_CODES = {f"{BUS_NAME}.Error.{name}": code for code, name in _ERROR_NAMES.items() if code}


async def serve(ops: list[Op], stop: asyncio.Event | None = None) -> None:
    from dbus_fast import BusType, RequestNameReply
    from dbus_fast.aio import MessageBus

    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    agent = Agent(bus, ops)
    bus.add_message_handler(agent.handle)
    reply = await bus.request_name(BUS_NAME)
    if reply != RequestNameReply.PRIMARY_OWNER:
        raise SystemExit(f"cannot own {BUS_NAME} on the system bus ({reply})")
    log.info("serving %s", BUS_NAME)
    if stop is None:
        await bus.wait_for_disconnect()  # type: ignore[no-untyped-call]
    else:
        await stop.wait()
        bus.disconnect()


def main() -> None:
    from .ops import OPS

    if sys.argv[1:] == ["--policy"]:  # how the policy file in the image is made
        print(bus_policy(OPS), end="")
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    asyncio.run(serve(OPS))


if __name__ == "__main__":
    main()
