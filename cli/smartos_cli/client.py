"""smartosctl's side of the agent: call one method on the system bus, return its JSON result."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from .agent import BUS_NAME, ERROR_CODES, PATH
from .errors import CtlError, Exit


async def _call(area: str, method: str, signature: str, body: list[Any]) -> Any:
    from dbus_fast import BusType, Message, MessageType
    from dbus_fast.aio import MessageBus

    try:
        bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    except (OSError, ValueError) as exc:
        raise CtlError(f"cannot reach the system bus: {exc}", code=Exit.UNAVAILABLE) from exc
    try:
        reply = await bus.call(Message(destination=BUS_NAME, path=PATH, interface=f"{BUS_NAME}.{area}",
                                       member=method, signature=signature, body=body))
    finally:
        bus.disconnect()
    assert reply is not None
    if reply.message_type == MessageType.ERROR:
        text = reply.body[0] if reply.body else ""
        if reply.error_name in ERROR_CODES:
            detail = json.loads(text)
            raise CtlError(detail["message"], hint=detail.get("hint"), code=ERROR_CODES[reply.error_name])
        if reply.error_name in ("org.freedesktop.DBus.Error.ServiceUnknown",
                                "org.freedesktop.DBus.Error.NameHasNoOwner"):
            raise CtlError("smartos-agent is not running", hint="sudo systemctl start smartos-agent",
                           code=Exit.UNAVAILABLE)
        if reply.error_name == "org.freedesktop.DBus.Error.AccessDenied":
            raise CtlError(f"not allowed: {text}", hint="smartosctl is for members of the "
                           "smartos-admin group (the admin user)", code=Exit.NOT_ALLOWED)
        raise CtlError(f"{reply.error_name}: {text}", code=Exit.FAILED)
    return json.loads(reply.body[0])


def call(area: str, method: str, signature: str = "", *args: Any) -> Any:
    return asyncio.run(_call(area, method, signature, list(args)))
