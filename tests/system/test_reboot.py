"""What must survive a reboot does, and what Home Assistant plants must not outlive one.

On the rpi4 VM a plain reboot (U-Boot's boot script, twice). On x86-64 the update to 0.2.0 is
this reboot (test_update.py calls `plant` and `check_after_boot` around it): reboots are
rationed, and an OS update is the harder case (a new root slot boots)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.conftest import ha_url
from tests.system.redteam import as_home_assistant

pytestmark = [pytest.mark.vm, pytest.mark.every_board]

# Links Home Assistant's code could leave in the trees it may write, each aimed at code or
# settings root uses, to be followed by something root runs at the next boot (as `install -d
# -o homeassistant` in smartos-prepare once followed /data/python-deps/.uv-cache).
PLANTED = {
    "/data/python-deps/.uv-cache": "/usr/lib/python3/dist-packages/smartos_cli",
    "/data/python-deps/redteam-etc": "/etc/smartos",
    "/data/homeassistant/redteam-wireguard": "/data/wireguard",
}


def plant(host: Any) -> dict[str, Any]:
    """Before a reboot: a file in Home Assistant's config, the links above planted as Home
    Assistant; returns what must be the same afterwards."""
    marker = f"written before reboot {time.time()}"
    host.run_test(f"echo '{marker}' | sudo -u homeassistant tee /data/homeassistant/smartos-test.txt")
    for link, target in PLANTED.items():
        planted = as_home_assistant(host, f"rm -rf {link} && ln -s {target} {link}")
        assert planted.rc == 0, planted.stderr
    return {
        "marker": marker,
        "machine_id": host.file("/etc/machine-id").content_string,
        "host_key": host.check_output("sudo cat /data/ssh/ssh_host_ed25519_key.pub"),
        "boot_id": host.file("/proc/sys/kernel/random/boot_id").content_string,
        "owners": {t: host.check_output(f"sudo stat -c %U:%G:%a {t}") for t in PLANTED.values()},
    }


def check_after_boot(host: Any, vm: Any, before: dict[str, Any]) -> None:
    """Also run after the boot into the other root slot of an OS update (test_update.py), whose
    /etc/machine-id RAUC's post-install handler wrote (rauc-post-install)."""
    assert host.file("/proc/sys/kernel/random/boot_id").content_string != before["boot_id"]
    assert host.service("smartos-prepare.service").is_running  # it ran, and refused nothing it needs
    for link, target in PLANTED.items():
        assert host.run(f"sudo test -L {link}").rc == 0, link
        assert host.check_output(f"sudo stat -c %U:%G:%a {target}") == before["owners"][target], target
    # nothing in the root slot belongs to Home Assistant's user
    assert host.check_output("sudo find / -xdev -user homeassistant -print -quit") == ""
    as_home_assistant(host, f"rm -f {' '.join(PLANTED)}")
    assert host.check_output("sudo cat /data/homeassistant/smartos-test.txt") == before["marker"]
    assert host.file("/etc/machine-id").content_string == before["machine_id"]
    assert host.check_output("sudo cat /data/smartos/machine-id") == before["machine_id"].strip()
    assert host.check_output("sudo cat /data/ssh/ssh_host_ed25519_key.pub") == before["host_key"]
    vm.wait_for_http(ha_url(vm), 900)
    assert host.service("smartos.service").is_running


def test_config_ssh_keys_and_identity_survive_a_reboot(host, vm, board, ha_ready) -> None:
    if board == "x86-64":
        pytest.skip("on x86-64 the update to 0.2.0 is this reboot, with these checks (test_update.py)")
    before = plant(host)
    host.run("sudo systemctl reboot")
    time.sleep(10)
    vm.wait_for_port(vm.ssh_port, 420)
    check_after_boot(host, vm, before)
