"""What must survive a reboot does. It reboots the shared VM: the smartosctl and update tests
after it run on a rebooted box."""

import time

import pytest

pytestmark = pytest.mark.vm


def test_config_ssh_keys_and_identity_survive_a_reboot(host, vm, ha_ready) -> None:
    marker = f"written before reboot {time.time()}"
    host.run_test(f"echo '{marker}' | sudo -u homeassistant tee /data/homeassistant/smartos-test.txt")
    before = {
        "machine_id": host.file("/etc/machine-id").content_string,
        "host_key": host.check_output("sudo cat /data/ssh/ssh_host_ed25519_key.pub"),
        "boot_id": host.file("/proc/sys/kernel/random/boot_id").content_string,
    }
    host.run("sudo systemctl reboot")
    time.sleep(10)
    vm.wait_for_port(2222, 420)
    assert host.file("/proc/sys/kernel/random/boot_id").content_string != before["boot_id"]
    assert host.file("/data/homeassistant/smartos-test.txt").content_string.strip() == marker
    assert host.file("/etc/machine-id").content_string == before["machine_id"]
    assert host.check_output("sudo cat /data/ssh/ssh_host_ed25519_key.pub") == before["host_key"]
    vm.wait_for_http("http://127.0.0.1:8123/manifest.json", 900)
    assert host.service("smartos.service").is_running
