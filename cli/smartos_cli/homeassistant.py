"""Home Assistant under the SmartOS service: start, stop, restart, its own config check."""

from __future__ import annotations

from typing import Any

from . import sandbox
from .errors import CtlError, Exit
from .run import run

UNIT = "smartos.service"
CONFIG_DIR = "/data/homeassistant"
VENV = "/opt/smartos/venv"
USER = "homeassistant"
URL = "http://127.0.0.1:8123/manifest.json"
VERBS = ("start", "stop", "restart")


def control(verb: str) -> dict[str, Any]:
    if verb not in VERBS:
        raise CtlError(f"expected one of {', '.join(VERBS)}, got {verb!r}")
    run(["systemctl", verb, UNIT], timeout=120)
    return {"unit": UNIT, "verb": verb, "state": state()}


def state() -> str:
    """systemd's view of the service: active, activating, inactive, failed ..."""
    return run(["systemctl", "is-active", UNIT], check=False).stdout.strip() or "unknown"


def check_config(config: str = CONFIG_DIR, venv: str = VENV) -> dict[str, Any]:
    """Home Assistant's own `check_config` script on the live config. It loads the owner's
    custom components, so it runs as Home Assistant runs: its user, in its service's sandbox."""
    result = sandbox.run_sandboxed(
        [f"{venv}/bin/python", "-m", "homeassistant", "--script", "check_config", "--config", config],
        sandbox.unit_properties(sandbox.HA_UNIT_FILE), description="SmartOS: Home Assistant's check_config",
        timeout=600)
    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0:
        raise CtlError(f"the configuration has errors:\n{output[-3000:]}", code=Exit.FAILED)
    return {"valid": True, "output": output[-3000:]}


def main_pid() -> int:
    return int(run(["systemctl", "show", "-P", "MainPID", UNIT], check=False).stdout.strip() or 0)


def owns(pid: int) -> bool:
    """Whether pid runs in Home Assistant's service (its cgroup)."""
    try:
        with open(f"/proc/{pid}/cgroup") as fh:
            return f"/{UNIT}" in fh.read()
    except OSError:
        return False


def stop() -> None:
    run(["systemctl", "stop", UNIT], timeout=120)


def start() -> None:
    run(["systemctl", "start", UNIT], timeout=120)
