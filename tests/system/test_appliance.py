"""The booted appliance, checked over ssh with testinfra: what a user and an attacker would see.

The VM runs under QEMU (TCG) with user-mode networking restricted to the host forwards, so the
guest has no route to the internet: Home Assistant must come up from what the image carries.
"""

import json
import subprocess
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.vm


def test_smartos_service_runs_home_assistant_as_its_own_user(host, ha_ready) -> None:
    service = host.service("smartos.service")
    assert service.is_enabled
    assert service.is_running
    pid = host.check_output("systemctl show -p MainPID --value smartos.service")
    user = host.check_output(f"ps -o user= -p {pid}")
    assert user == "homeassistant"
    assert host.user("homeassistant").uid != 0


def test_home_assistant_answers_with_onboarding(ha_ready) -> None:
    with urllib.request.urlopen("http://127.0.0.1:8123/api/onboarding", timeout=30) as resp:
        steps = json.load(resp)
    assert {"step": "user", "done": False} in steps
    with urllib.request.urlopen("http://127.0.0.1:8123/", timeout=30) as resp:
        assert resp.status == 200


def test_home_assistant_installed_nothing_at_first_start(host, ha_ready) -> None:
    """Everything a fresh install sets up was in the image: no install attempts in the log."""
    log = host.check_output("sudo journalctl -u smartos.service -b --no-pager")
    assert "Attempting install of" not in log
    assert "Unable to install package" not in log
    assert "Home Assistant core failed to initialize" not in log


def test_guest_has_no_route_to_the_internet(host) -> None:
    result = host.run("curl -s -m 8 -o /dev/null http://deb.debian.org/")
    assert result.rc != 0


def test_ssh_refuses_passwords_and_root(host, ssh_key: Path) -> None:
    config = host.check_output("sudo sshd -T")
    assert "passwordauthentication no" in config
    assert "permitrootlogin no" in config
    probe = subprocess.run(
        ["ssh", "-p", "2222", "-o", "BatchMode=yes", "-o", "PubkeyAuthentication=no",
         "-o", "PreferredAuthentications=password,keyboard-interactive",
         "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "admin@127.0.0.1", "true"], capture_output=True, text=True, timeout=60)
    assert probe.returncode != 0
    assert "Permission denied (publickey)" in probe.stderr


def test_no_password_anywhere(host) -> None:
    shadow = host.check_output("sudo cat /etc/shadow")
    for line in shadow.splitlines():
        user, pw = line.split(":")[:2]
        assert pw in ("*", "!", "!*") or pw.startswith("!"), f"{user} has a password"


def test_firewall_drops_inbound_by_default(host) -> None:
    chain = host.check_output("sudo nft list chain inet smartos input")
    assert "policy drop" in chain
    assert "tcp dport { 22, 8123 } accept" in chain
    assert "udp dport 5353 accept" in chain


def test_radio_udev_rules_are_installed_and_valid(host) -> None:
    rules = host.file("/etc/udev/rules.d/70-smartos-radios.rules")
    assert rules.exists
    assert 'SYMLINK+="zigbee"' in rules.content_string
    assert host.run("udevadm verify /etc/udev/rules.d/70-smartos-radios.rules").rc == 0


def test_data_partition_is_mounted_and_grew_to_fill_the_disk(host) -> None:
    data = host.mount_point("/data")
    assert data.exists
    assert data.filesystem == "ext4"
    assert data.device.endswith("vda4")
    size_gib = int(host.check_output("df --output=size -B1 /data | tail -1")) / 2**30
    assert size_gib > 2, "the 8 GiB test disk leaves >2 GiB for /data after the two root slots"
    assert host.mount_point("/var/log/journal").exists
    assert host.check_output("sudo ls /data/journal")  # the persistent journal lives there


def test_per_device_identity_is_made_at_first_boot(host) -> None:
    machine_id = host.file("/etc/machine-id").content_string.strip()
    assert len(machine_id) == 32
    for kind in ("ed25519", "ecdsa", "rsa"):
        assert host.run(f"sudo test -s /data/ssh/ssh_host_{kind}_key").rc == 0, kind
    assert not host.run("ls /etc/ssh/ssh_host_*").stdout.strip()


def test_appliance_basics(host) -> None:
    assert host.check_output("hostname") == "smartos-test"
    assert not host.package("modemmanager").is_installed
    assert host.service("systemd-resolved").is_running
    assert "yes" in host.check_output("resolvectl mdns").lower()
    assert host.file("/etc/os-release").contains("SmartOS")
    assert host.file("/usr/local/bin/ffmpeg").is_symlink
    assert host.run("ffmpeg -hide_banner -version").rc == 0
    assert host.run("systemctl is-system-running --wait").stdout.strip() in ("running", "degraded")
    assert not host.check_output("systemctl --failed --plain --no-legend")


def test_slot_a_is_booted_and_confirmed_once_healthy(host, ha_ready) -> None:
    assert "rauc.slot=A" in host.file("/proc/cmdline").content_string
    host.run("sudo systemctl start smartos-health.service")  # waits for the gate if still running
    assert host.service("smartos-health.service").is_running or host.run(
        "systemctl is-active smartos-health.service").stdout.strip() == "active"
    env = host.check_output("sudo grub-editenv /boot/efi/EFI/BOOT/grubenv list")
    assert "A_OK=1" in env
    assert "A_TRY=0" in env, env
