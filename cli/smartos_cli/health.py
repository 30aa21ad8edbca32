"""The health gate: once per boot (smartos-health.service), decide whether this slot is good.

A boot is a *trial* when the slot it runs from was just installed (update-state.json names it
as pending). A trial slot is confirmed (`rauc status mark-good`) only once Home Assistant is
healthy: the SmartOS service active and HTTP 200 on 8123. If it is not healthy within the
configured time (update.json `health_timeout`, default 900 s), or the service keeps crashing,
the gate writes down why and reboots; the boot loader counts the tries and after three falls
back to the previous slot. That next boot finds the pending update on the other slot, records it
as rolled back with the reason, and marks the failed slot bad.

Every other boot is confirmed at once: the slot booted, and Home Assistant trouble caused by the
owner's own configuration must never roll the OS back.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

from . import homeassistant, status, update
from .errors import CtlError
from .paths import Paths
from .run import run

log = logging.getLogger("smartos-health")
SERVICE = "smartos.service"
CRASHES = 5  # restarts of the SmartOS service in one boot that make it unhealthy at once
POLL = 5


def _service() -> dict[str, str]:
    out = run(["systemctl", "show", SERVICE, "-p", "ActiveState,NRestarts,Result"], check=False).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def probe() -> tuple[bool, str]:
    """(healthy, why not)."""
    svc = _service()
    if svc.get("ActiveState") == "failed":
        return False, f"{SERVICE} failed ({svc.get('Result', '?')})"
    if int(svc.get("NRestarts", "0") or 0) >= CRASHES:
        return False, f"{SERVICE} crashed {svc['NRestarts']} times"
    if svc.get("ActiveState") != "active":
        return False, f"{SERVICE} is {svc.get('ActiveState', '?')}"
    if not status.answers(homeassistant.URL, timeout=10):
        return False, f"Home Assistant does not answer on {homeassistant.URL}"
    return True, ""


def _boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def _mark(state: str, slot: str) -> None:
    run(["rauc", "status", f"mark-{state}", slot])


def _reboot() -> None:
    run(["systemctl", "--no-block", "reboot"])


def _clean_snapshot() -> None:
    """The update is confirmed: Home Assistant's data snapshot (ha_data.py) can go now rather
    than at the next boot. Restarting the oneshot runs it again; it finds nothing pending."""
    run(["systemctl", "--no-block", "restart", "smartos-ha-data.service"], check=False)


def gate(paths: Paths, booted: str, *, timeout: int, check: Callable[[], tuple[bool, str]] = probe,
         mark: Callable[[str, str], None] = _mark, reboot: Callable[[], None] = _reboot,
         boot_id: Callable[[], str] = _boot_id, sleep: Callable[[float], None] = time.sleep,
         clock: Callable[[], float] = time.monotonic,
         clean_snapshot: Callable[[], None] = _clean_snapshot) -> str:
    """Decide for this boot; returns what was decided (also logged). The slots are marked
    before the attempt is recorded as over: whoever reads the record (`update status`) and sees
    no pending update also sees the slots as they will stay."""
    state = update.load_state(paths)
    pending = state.pending
    if pending and pending.get("slot") != booted:
        attempts = pending.get("attempts", [])
        if pending.get("state") == "installing" and not attempts:
            mark("good", "booted")
            update.finish(paths, state, "interrupted", reason="the install did not finish "
                          "(power loss or crash); the running system was not changed")
            return f"the install of {pending['version']} was interrupted; slot {booted} kept"
        reason = attempts[-1].get("reason", "") if attempts else ""
        mark("bad", "other")
        mark("good", "booted")
        update.finish(paths, state, "rolled back", boots=len(attempts),
                      reason=reason or f"slot {pending['slot']} did not boot")
        return (f"{pending['version']} failed in slot {pending['slot']} after {len(attempts)} "
                f"boot(s) ({reason or 'it did not boot'}); back on slot {booted}")
    if not pending:
        mark("good", "booted")
        return f"slot {booted} confirmed (not a trial boot)"

    this_boot = boot_id()
    attempts = pending.setdefault("attempts", [])
    if not attempts or attempts[-1].get("boot_id") != this_boot:
        attempts.append({"boot_id": this_boot, "started_at": update.now()})
        update.save_state(paths, state)
    start = clock()
    reason = ""
    while clock() - start < timeout:
        healthy, reason = check()
        if healthy:
            waited = round(clock() - start)
            mark("good", "booted")
            update.finish(paths, state, "installed", health_seconds=waited, boots=len(attempts))
            clean_snapshot()
            return f"{pending['version']} healthy after {waited} s; slot {booted} confirmed"
        if "crashed" in reason or "failed" in reason:
            break
        sleep(POLL)
    else:
        reason = f"not healthy within {timeout} s: {reason}"
    attempts[-1]["reason"] = reason
    update.save_state(paths, state)
    reboot()
    return f"{pending['version']} not healthy in slot {booted} ({reason}); rebooting (try {len(attempts)})"


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    paths = Paths()
    settings = update.load_settings(paths)
    try:
        booted = update.booted_slot()
    except CtlError as exc:
        print(exc.message, file=sys.stderr)
        sys.exit(1)
    print(gate(paths, booted, timeout=settings.health_timeout), flush=True)


if __name__ == "__main__":
    main()
