"""The sandbox smartosctl gives code it runs for others. The transient units themselves run on
the booted image (tests/system/test_redteam.py, test_smartosctl.py): this machine has no
systemd as PID 1 to start them."""

from __future__ import annotations

from smartos_cli import sandbox

from tests.conftest import REPO


def test_check_config_gets_exactly_home_assistants_user_and_sandbox() -> None:
    props = sandbox.unit_properties(REPO / "systemd/smartos.service")
    assert "User=homeassistant" in props and "NoNewPrivileges=yes" in props
    assert "CapabilityBoundingSet=CAP_NET_RAW CAP_NET_BIND_SERVICE" in props
    assert props.count("DeviceAllow=char-ttyUSB rw") == 1 and "DevicePolicy=closed" in props
    assert not [p for p in props if p.split("=")[0] in ("ExecStart", "ExecStartPre", "Restart", "Type")]
    assert not [p for p in props if p.startswith(("Description=", "WantedBy=", "After="))]


def test_the_radio_probe_user_sees_no_data_no_network_and_holds_no_capability() -> None:
    props = sandbox.DEVICE_ONLY
    for needed in ("DynamicUser=yes", "InaccessiblePaths=-/data", "PrivateNetwork=yes",
                   "CapabilityBoundingSet=", "DevicePolicy=closed", "NoNewPrivileges=yes"):
        assert needed in props
    assert not [p for p in props if p.startswith("DeviceAllow=")]  # only the one device, added per probe
