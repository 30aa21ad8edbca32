"""Identify the Zigbee firmware on a serial port: run by Home Assistant's own Python
(/opt/smartos/venv), whose ZHA libraries do the talking: bellows (Silicon Labs EZSP),
zigpy-znp (TI Z-Stack), zigpy-deconz (dresden elektronik). Standalone on purpose: that venv
cannot import smartos_cli. Prints one JSON object; exit 0 when a stack answered, 1 when none did.

    /opt/smartos/venv/bin/python radio_probe.py /dev/ttyUSB0 [--stack ezsp|znp|deconz]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.metadata
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

TIMEOUT_S = 15


def _library(name: str) -> str:
    return f"{name} {importlib.metadata.version(name)}"


def _device(path: str, baudrate: int) -> dict[str, Any]:
    import zigpy.config

    return dict(zigpy.config.SCHEMA_DEVICE({zigpy.config.CONF_DEVICE_PATH: path,
                                            zigpy.config.CONF_DEVICE_BAUDRATE: baudrate}))


async def probe_ezsp(path: str, baudrate: int) -> dict[str, Any]:
    from bellows.ezsp import EZSP

    ezsp = EZSP(_device(path, baudrate))
    try:
        await ezsp.connect(use_thread=False)
        manufacturer, board, firmware = await ezsp.get_board_info()
        return {"stack": "ezsp", "firmware": firmware, "manufacturer": manufacturer, "board": board,
                "protocol_version": ezsp.ezsp_version, "library": _library("bellows")}
    finally:
        await ezsp.disconnect()


async def probe_znp(path: str, baudrate: int) -> dict[str, Any]:
    import zigpy.config
    import zigpy_znp.commands as c
    from zigpy_znp.api import ZNP
    from zigpy_znp.config import CONFIG_SCHEMA

    znp = ZNP(CONFIG_SCHEMA({zigpy.config.CONF_DEVICE: _device(path, baudrate)}))
    try:
        await znp.connect()
        version = await znp.request(c.SYS.Version.Req())
        return {"stack": "znp", "firmware": f"Z-Stack {znp.version} build {version.CodeRevision}",
                "manufacturer": "Texas Instruments", "board": None,
                "protocol_version": version.TransportRev, "library": _library("zigpy-znp")}
    finally:
        znp.close()


async def probe_deconz(path: str, baudrate: int) -> dict[str, Any]:
    from zigpy_deconz.api import Deconz

    api = Deconz(None, _device(path, baudrate))
    try:
        await api.connect()
        fw = api.firmware_version
        return {"stack": "deconz", "firmware": f"0x{int(fw):08x}", "manufacturer": "dresden elektronik",
                "board": str(getattr(fw, "platform", "")) or None, "protocol_version": api.protocol_version,
                "library": _library("zigpy-deconz")}
    finally:
        await api.disconnect()


PROBES: dict[str, tuple[Callable[[str, int], Awaitable[dict[str, Any]]], tuple[int, ...]]] = {
    # the order ZHA's radio detection uses; the baud rates each stack's sticks ship with
    "ezsp": (probe_ezsp, (115200, 460800)),
    "znp": (probe_znp, (115200,)),
    "deconz": (probe_deconz, (38400, 115200)),
}


LIBRARIES = {"ezsp": ("bellows.ezsp",), "znp": ("zigpy_znp.api", "zigpy_znp.config"),
             "deconz": ("zigpy_deconz.api",)}


async def probe(path: str, stacks: list[str]) -> dict[str, Any]:
    tried = []
    for stack in stacks:
        fn, rates = PROBES[stack]
        for module in LIBRARIES[stack]:  # imported before the clock starts (slow on a Pi)
            importlib.import_module(module)
        for rate in rates:
            try:
                result = await asyncio.wait_for(fn(path, rate), TIMEOUT_S)
            except Exception as exc:  # this stack or speed does not answer: try the next
                tried.append(f"{stack}@{rate}: {type(exc).__name__}: {exc}"[:200])
                continue
            return {"device": path, "baudrate": rate, **result, "tried": tried}
    return {"device": path, "stack": None, "tried": tried}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("device")
    ap.add_argument("--stack", choices=list(PROBES), action="append")
    args = ap.parse_args()
    result = asyncio.run(probe(args.device, args.stack or list(PROBES)))
    print(json.dumps(result))
    sys.exit(0 if result["stack"] else 1)


if __name__ == "__main__":
    main()
