"""The audit log: one structured journald entry per state-changing action.

    journalctl SMARTOS_AUDIT=1 -o verbose      # every entry, with all fields
    smartosctl logs smartos                    # the same among the SmartOS services' lines

Fields: SMARTOS_ACTION (e.g. firewall.allow), SMARTOS_CALLER (user name), SMARTOS_CALLER_UID,
SMARTOS_ARGS (JSON, secrets replaced by "***"), SMARTOS_RESULT (ok or error), MESSAGE (one line
for people).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping
from typing import Any

SECRET_WORDS = ("password", "passphrase", "psk", "secret", "private_key", "token")
SYSLOG_IDENTIFIER = "smartos-audit"


def redact(args: Mapping[str, Any]) -> dict[str, Any]:
    return {k: "***" if any(w in k.lower() for w in SECRET_WORDS) and v else v
            for k, v in args.items()}


def record(action: str, caller: str, uid: int, args: Mapping[str, Any], result: str) -> dict[str, str]:
    """Write one audit entry to the journal and return its fields."""
    shown = redact(args)
    fields = {
        "MESSAGE": f"{caller}: {action} {json.dumps(shown, sort_keys=True)} -> {result}",
        "SMARTOS_AUDIT": "1",
        "SMARTOS_ACTION": action,
        "SMARTOS_CALLER": caller,
        "SMARTOS_CALLER_UID": str(uid),
        "SMARTOS_ARGS": json.dumps(shown, sort_keys=True),
        "SMARTOS_RESULT": result,
        "SYSLOG_IDENTIFIER": SYSLOG_IDENTIFIER,
        "PRIORITY": "5" if result == "ok" else "4",  # notice / warning
    }
    journal = importlib.import_module("systemd.journal")  # python3-systemd, on the device
    journal.send(**fields)
    return fields
