"""Acting as Home Assistant's code: a command run the way smartos.service runs Home Assistant.

Its user, groups, capabilities and sandbox are read from the device's own smartos.service
(smartos_cli.sandbox.unit_properties, which smartosctl's check-config uses too), so an attack
tried here has exactly the powers a malicious integration or custom component would have."""

from __future__ import annotations

import shlex
from typing import Any

_PROPS = ("python3 -c 'from smartos_cli import sandbox; "
          "print(\"\\n\".join(sandbox.unit_properties(sandbox.HA_UNIT_FILE)))'")


def as_home_assistant(host: Any, command: str, *extra: str) -> Any:
    """command in a transient unit with smartos.service's sandbox (plus `extra` properties,
    later ones overriding), as testinfra's CommandResult."""
    props = [*host.check_output(_PROPS).splitlines(), *extra]
    args = " ".join(shlex.quote(f"--property={p}") for p in props)
    return host.run(f"sudo systemd-run --quiet --wait --pipe --collect --service-type=exec {args} "
                    f"-- /bin/sh -c {shlex.quote(command)}")
