"""RAUC's pre-install handler (/etc/rauc/system.conf [handlers] pre-install=, through
/usr/lib/smartos/rauc-pre-install): a non-zero exit stops the install before any slot changes."""

from __future__ import annotations

import contextlib
import os
import sys

from .files import write_atomically
from .update import REFUSED, pre_install_check


def main() -> int:
    reason = pre_install_check(os.environ)
    if reason:
        print(f"<< error smartos: {reason}", flush=True)  # RAUC's progress messages and journal
        with contextlib.suppress(OSError):  # refused all the same
            write_atomically(REFUSED, reason + "\n", mode=0o600)  # for the agent to report
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
