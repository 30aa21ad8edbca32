"""Running someone else's code without lending it root: a transient systemd unit.

The agent is root, and some of its work means running code it does not own: Home Assistant's
`check_config` loads the owner's custom components; the radio probe imports Home Assistant's
radio libraries from a venv whose `.pth` puts the run-time package directory (writable by Home
Assistant) on `sys.path`. Neither runs in the agent's process: `systemd-run --wait --pipe`
starts it as a transient unit with the sandbox given here, and hands back its output and exit
code. The agent only reads what it prints.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .run import Completed, run

HA_UNIT_FILE = Path("/usr/lib/systemd/system/smartos.service")

# [Service] keys of a unit that describe how it runs rather than what it runs: copying these
# into a transient unit gives the same user, groups, environment and sandbox.
_NOT_SANDBOX = {"Type", "ExecStart", "ExecStartPre", "ExecStartPost", "ExecStop", "ExecReload",
                "Restart", "RestartSec", "TimeoutStopSec", "TimeoutStartSec", "WatchdogSec"}

# An unprivileged throwaway user for code that needs one device and nothing else. Everything
# /data holds is hidden from it (the run-time package directory among it), it has no network
# and no capabilities, and it can open only the device it was given.
DEVICE_ONLY = (
    "DynamicUser=yes", "SupplementaryGroups=dialout", "DevicePolicy=closed",
    "InaccessiblePaths=-/data", "PrivateNetwork=yes", "PrivateTmp=yes", "ProtectSystem=strict",
    "ProtectHome=yes", "ProtectProc=invisible", "ProtectKernelTunables=yes",
    "ProtectKernelModules=yes", "ProtectKernelLogs=yes", "ProtectControlGroups=yes",
    "ProtectClock=yes", "ProtectHostname=yes", "NoNewPrivileges=yes", "CapabilityBoundingSet=",
    "RestrictNamespaces=yes", "RestrictRealtime=yes", "RestrictSUIDSGID=yes", "LockPersonality=yes",
    "RestrictAddressFamilies=AF_UNIX", "SystemCallArchitectures=native",
    "SystemCallFilter=@system-service", "SystemCallFilter=~@privileged @resources", "UMask=0077",
)


def unit_properties(unit_file: Path) -> list[str]:
    """A unit's [Service] settings that say who it runs as and in which sandbox, as
    `Key=Value` properties for systemd-run (repeated keys keep their order)."""
    props: list[str] = []
    section = ""
    for raw in unit_file.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and line.split("=", 1)[0] not in _NOT_SANDBOX:
            props.append(line)
    return props


def run_sandboxed(cmd: Sequence[str | Path], properties: Sequence[str], *, description: str,
                  timeout: float) -> Completed:
    """cmd in a transient service with these properties; its stdout, stderr and exit code."""
    args = ["systemd-run", "--quiet", "--wait", "--pipe", "--collect", "--service-type=exec",
            f"--description={description}", f"--property=RuntimeMaxSec={int(timeout)}"]
    args += [f"--property={p}" for p in properties]
    return run([*args, "--", *[str(c) for c in cmd]], check=False, timeout=timeout + 30)
