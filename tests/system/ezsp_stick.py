"""A simulated Silicon Labs EZSP Zigbee stick on a pseudo-terminal, for `smartosctl radio probe`.

No USB stick can be attached to the test VM, so this stands in for one: it speaks the UART
protocol (ASH: RST/RSTACK, DATA/ACK frames with CRC, byte stuffing and data randomization) and
answers the EZSP commands a probe sends (version negotiation from protocol 4 to 13, the XNCP
feature query, manufacturing tokens, the firmware's version info). Frames are built and parsed
with bellows' own ASH and EZSP definitions, so what it says is what a real stick says.

Run on the device with Home Assistant's venv (it has bellows):
    /opt/smartos/venv/bin/python ezsp_stick.py     # prints the pty's path, then serves
"""

from __future__ import annotations

import os
import select
import struct
import sys
import time
import tty

from bellows import ash
from bellows import types as t
from bellows.ezsp.v4 import EZSPv4
from bellows.ezsp.v13 import EZSPv13

PROTOCOL = 13
FIRMWARE = (7, 4, 4, 0, 0)  # major, minor, patch, special, build -> "7.4.4.0 build 0"
TOKENS = {t.EzspMfgTokenId.MFG_STRING: b"SmartOS test\xff\xff\xff\xff",
          t.EzspMfgTokenId.MFG_BOARD_NAME: b"simulated-ezsp\x00\x00"}


def answer(name: str, args: dict[str, object]) -> dict[str, object] | None:
    if name == "version":
        return {"protocolVersion": PROTOCOL, "stackType": 2, "stackVersion": 0x7440}
    if name == "customFrame":  # XNCP: not supported by this firmware
        return {"status": 1, "reply": b""}
    if name == "getMfgToken":
        return {"tokenData": TOKENS.get(args["tokenId"], b"\xff" * 16)}
    if name == "getValue" and args["valueId"] == t.EzspValueId.VALUE_VERSION_INFO:
        major, minor, patch, special, build = FIRMWARE
        return {"status": t.EzspStatus.SUCCESS, "value": struct.pack("<HBBBB", build, major, minor, patch,
                                                                       special)}
    return None


class Stick:
    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = b""
        self.frm_num = 0  # our next DATA frame's number
        self.ack_num = 0  # the host's next expected frame
        self.legacy = True  # EZSP frame format: legacy (v4) until version 13 was agreed

    def send(self, frame: ash.AshFrame) -> None:
        os.write(self.fd, ash.AshProtocol._stuff_bytes(frame.to_bytes()) + bytes([ash.Reserved.FLAG]))

    def received(self, data: bytes) -> None:
        self.buffer += data
        while bytes([ash.Reserved.FLAG]) in self.buffer:
            raw, _, self.buffer = self.buffer.partition(bytes([ash.Reserved.FLAG]))
            if bytes([ash.Reserved.CANCEL]) in raw:
                raw = raw.rpartition(bytes([ash.Reserved.CANCEL]))[2]
            if raw:
                self.frame(ash.AshProtocol._unstuff_bytes(raw))

    def frame(self, data: bytes) -> None:
        try:
            frame = ash.parse_frame(data)
        except ash.ParsingError:
            return
        if isinstance(frame, ash.RstFrame):
            self.frm_num = self.ack_num = 0
            self.legacy = True
            self.send(ash.RStackFrame(version=2, reset_code=t.NcpResetCode.RESET_SOFTWARE))
        elif isinstance(frame, ash.DataFrame):
            if frame.frm_num != self.ack_num and not frame.re_tx:
                return
            self.ack_num = (frame.frm_num + 1) % 8
            self.send(ash.AckFrame(res=0, ncp_ready=False, ack_num=self.ack_num))
            self.ezsp(frame.ezsp_frame)

    def ezsp(self, data: bytes) -> None:
        table = EZSPv4.COMMANDS if self.legacy else EZSPv13.COMMANDS
        if self.legacy:
            seq, frame_id, params = data[0], data[2], data[3:]
        else:
            seq, frame_id, params = data[0], int.from_bytes(data[3:5], "little"), data[5:]
        name, (_, tx_schema, rx_schema) = next(((n, c) for n, c in table.items() if c[0] == frame_id),
                                                ("?", (None, {}, {})))
        if name == "?":
            return
        args, _ = t.deserialize_dict(params, tx_schema)
        values = answer(name, args)
        if values is None:
            return
        body = t.serialize_dict([], values, rx_schema)
        header = bytes([seq, 0x80, frame_id]) if self.legacy else \
            bytes([seq, 0x80, 0x01]) + frame_id.to_bytes(2, "little")
        self.send(ash.DataFrame(frm_num=self.frm_num, re_tx=False, ack_num=self.ack_num,
                                ezsp_frame=header + body))
        self.frm_num = (self.frm_num + 1) % 8
        if name == "version":
            self.legacy = False  # the host speaks PROTOCOL's extended frames from now on


def main() -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    print(os.ttyname(slave), flush=True)
    os.close(slave)  # like a stick: nobody has the port open until the probe does
    stick = Stick(master)
    while True:
        ready, _, _ = select.select([master], [], [], 1.0)
        if ready:
            try:
                stick.received(os.read(master, 4096))
            except OSError:  # the port is closed (EIO) until someone opens it
                time.sleep(0.1)


if __name__ == "__main__":
    sys.exit(main())
