"""smartosctl's Z-Stack and deCONZ probes at the boundary of Home Assistant's radio libraries.

No TI or ConBee stick (and no simulator of their serial protocols) is available here: the
library's connect/request calls are replaced by ones that return what those sticks answer
(zigpy-znp's and zigpy-deconz's own response types), so the probe's use of the real library
classes and its report are checked. EZSP is probed end to end against a simulated stick
(ezsp_stick.py). Run on the device with Home Assistant's venv; prints one JSON object.
"""

from __future__ import annotations

import asyncio
import json
import sys
from unittest import mock

sys.path.insert(0, "/usr/lib/python3/dist-packages/smartos_cli")  # radio_probe.py is standalone

import radio_probe  # noqa: E402
import zigpy_deconz.api as deconz  # noqa: E402
import zigpy_znp.commands as c  # noqa: E402
from zigpy_znp.api import ZNP  # noqa: E402


async def znp() -> dict[str, object]:
    version = c.SYS.Version.Rsp(TransportRev=2, ProductId=1, MajorRel=2, MinorRel=7, MaintRel=1,
                                CodeRevision=20230507)

    async def connect(self: ZNP, *args: object, **kwargs: object) -> None:
        self.version = 3.30

    with mock.patch.object(ZNP, "connect", connect), \
            mock.patch.object(ZNP, "request", mock.AsyncMock(return_value=version)), \
            mock.patch.object(ZNP, "close", mock.Mock()):
        return await radio_probe.probe("/dev/ttyUSB0", ["znp"])


async def deconz_probe() -> dict[str, object]:
    async def connect(self: deconz.Deconz) -> None:
        self._firmware_version = deconz.FirmwareVersion(0x26780700)
        self._protocol_version = 0x010E

    with mock.patch.object(deconz.Deconz, "connect", connect), \
            mock.patch.object(deconz.Deconz, "disconnect", mock.AsyncMock()):
        return await radio_probe.probe("/dev/ttyACM0", ["deconz"])


async def nothing() -> dict[str, object]:
    """A port where no stack answers: every stack and speed is tried and named."""
    failing = mock.AsyncMock(side_effect=TimeoutError("no answer"))
    with mock.patch.dict(radio_probe.PROBES, {name: (failing, rates) for name, (_, rates)
                                               in radio_probe.PROBES.items()}):
        return await radio_probe.probe("/dev/ttyUSB1", list(radio_probe.PROBES))


print(json.dumps({"znp": asyncio.run(znp()), "deconz": asyncio.run(deconz_probe()),
                  "nothing": asyncio.run(nothing())}, default=str))
