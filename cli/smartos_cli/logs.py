"""`smartosctl logs`: journald, read with systemd-python (the admin is in systemd-journal)."""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from .errors import CtlError

SOURCES = {
    "ha": ["_SYSTEMD_UNIT=smartos.service"],
    "smartos": ["_SYSTEMD_UNIT=smartos.service", "_SYSTEMD_UNIT=smartos-agent.service",
                "_SYSTEMD_UNIT=smartos-health.service", "_SYSTEMD_UNIT=smartos-prepare.service",
                "_SYSTEMD_UNIT=smartos-firstboot.service", "_SYSTEMD_UNIT=smartos-ssh-keys.service",
                "SYSLOG_IDENTIFIER=smartos-audit"],
    "system": [],
}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """'10m', '2h', '3d' ago, or an ISO date/time."""
    now = now or datetime.now()
    units = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
    if text and text[-1] in units and text[:-1].isdigit():
        return now - timedelta(**{units[text[-1]]: int(text[:-1])})
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise CtlError(f"--since: expected e.g. 10m, 2h, 3d or 2026-11-25T08:00, got {text!r}") from None


def _entry(raw: dict[str, Any]) -> dict[str, Any]:
    ts = raw.get("__REALTIME_TIMESTAMP")
    return {"time": ts.isoformat(timespec="seconds") if ts else None,
            "unit": raw.get("_SYSTEMD_UNIT") or raw.get("SYSLOG_IDENTIFIER"),
            "priority": raw.get("PRIORITY"),
            "message": raw.get("MESSAGE") if isinstance(raw.get("MESSAGE"), str)
            else repr(raw.get("MESSAGE"))}


def read(source: str, lines: int = 50, since: str | None = None,
         follow: bool = False) -> Iterator[dict[str, Any]]:
    journal = importlib.import_module("systemd.journal")  # python3-systemd, on the device
    if source not in SOURCES:
        raise CtlError(f"expected one of {', '.join(SOURCES)}, got {source!r}")
    reader = journal.Reader()
    for i, match in enumerate(SOURCES[source]):
        if i:
            reader.add_disjunction()
        reader.add_match(match)
    if since:
        reader.seek_realtime(parse_since(since))
        entries = [_entry(e) for e in reader]
        yield from entries[-lines:] if not follow and lines else entries
    else:
        reader.seek_tail()
        back = []
        for _ in range(lines):
            e = reader.get_previous()
            if not e:
                break
            back.append(_entry(e))
        yield from reversed(back)
        reader.seek_tail()
        reader.get_previous()
    while follow:
        if reader.wait(1) == journal.APPEND:
            for e in reader:
                yield _entry(e)


def format_line(entry: dict[str, Any], as_json: bool) -> str:
    if as_json:
        return json.dumps(entry)
    return f"{entry['time']} {entry['unit']}: {entry['message']}"
