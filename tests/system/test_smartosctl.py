"""smartosctl on the booted image, run as the admin over ssh: the same commands a user types."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.vm


@pytest.mark.every_board
def test_status_json_reports_the_slot_and_home_assistant(host, board, ha_ready) -> None:
    status = json.loads(host.check_output("smartosctl status --json"))
    assert status["slot"] == "A"
    assert status["board"] == board
    assert status["homeassistant_state"] == "active"
    assert status["homeassistant_answers"] is True
    assert status["mdns_name"] == "smartos-test.local"
    assert {d["mount"] for d in status["disks"]} == {"/", "/data"}
    assert any("10.0.2.15" in ips for ips in status["addresses"].values())
    assert status["radios"] == []  # QEMU's machine has no USB stick
    assert status["temperature_c"] is None or 0 < status["temperature_c"] < 110
    text = host.check_output("smartosctl status")
    assert "slot A" in text and "Home Assistant" in text


def test_logs_return_home_assistant_lines(host, ha_ready) -> None:
    out = host.check_output("smartosctl logs ha --lines 20 --json")
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines and all(e["unit"] == "smartos.service" for e in lines)
    assert host.run("smartosctl logs system --since 1z").rc == 2


def test_firewall_allow_and_deny_reach_the_kernel_and_the_audit_log(host) -> None:
    out = host.run("smartosctl firewall allow 1883/tcp --from 10.0.2.0/24")
    assert out.rc == 0, out.stderr
    assert "ip saddr 10.0.2.0/24 tcp dport 1883 accept" in host.check_output("sudo nft list ruleset")
    assert host.run("smartosctl firewall deny 8883/udp").rc == 0
    shown = json.loads(host.check_output("smartosctl firewall show --json"))
    assert [(r["action"], r["ports"], r["proto"]) for r in shown["rules"]] == \
        [("allow", "1883", "tcp"), ("deny", "8883", "udp")]
    # the test's ssh comes from QEMU's user network (10.0.2.2): denying ssh would lock it out
    refused = host.run("smartosctl firewall deny 22/tcp")
    assert refused.rc == 3 and "10.0.2.2" in refused.stderr and "--force" in refused.stderr
    assert "dport 22 drop" not in host.check_output("sudo nft list ruleset")
    bad = host.run("smartosctl firewall allow 99999/tcp")
    assert bad.rc == 2 and "port: expected 1-65535" in bad.stderr
    for _ in range(2):
        assert host.run("smartosctl firewall remove 1").rc == 0
    assert "1883" not in host.check_output("sudo nft list ruleset")
    audit = [json.loads(line) for line in host.check_output(
        "journalctl SMARTOS_AUDIT=1 -o json --no-pager").splitlines()]
    actions = [(e["SMARTOS_ACTION"], e["SMARTOS_CALLER"], e["SMARTOS_RESULT"]) for e in audit]
    assert ("firewall.allow", "admin", "ok") in actions
    assert any(a == "firewall.deny" and r.startswith("error: this would block") for a, _, r in actions)
    assert actions.count(("firewall.remove", "admin", "ok")) == 2


def test_only_the_admin_may_call_the_agent(host) -> None:
    """Another user (nobody) is refused by the bus policy; nothing changes."""
    out = host.run("sudo -u nobody smartosctl firewall allow 1234/tcp")
    assert out.rc == 3, out.stderr
    assert "1234" not in host.check_output("sudo nft list ruleset")


def test_ha_restart_goes_through_the_agent(host, ha_ready) -> None:
    out = host.run("smartosctl ha restart --json")
    assert out.rc == 0, out.stderr
    assert json.loads(out.stdout)["state"] in ("active", "activating")
    assert host.run("smartosctl ha sing").rc == 2


def test_backup_create_change_restore_brings_the_file_back(host, ha_ready) -> None:
    config = "/data/homeassistant/configuration.yaml"
    original = host.check_output(f"sudo cat {config}")
    made = host.run("echo 'correct horse battery' | smartosctl backup create --password-file - --json")
    assert made.rc == 0, made.stderr
    name = json.loads(made.stdout)["name"]
    assert name in host.check_output("smartosctl backup list")
    assert json.loads(host.check_output("smartosctl status --json"))["last_backup"]
    host.run(f"echo 'broken: [' | sudo tee {config}")
    wrong = host.run(f"echo 'not the password' | smartosctl backup restore {name} --password-file -")
    assert wrong.rc == 2 and "wrong password" in wrong.stderr
    assert host.check_output(f"sudo cat {config}") == "broken: ["
    restored = host.run(f"echo 'correct horse battery' | smartosctl backup restore {name} --password-file -")
    assert restored.rc == 0, restored.stderr
    assert host.check_output(f"sudo cat {config}") == original
    assert host.file(config).user == "homeassistant"
    # /data/network is this device's own (not restored): still what networkd reads
    assert host.run("sudo touch /data/network/restore-check && ls /etc/systemd/network/restore-check").rc == 0
    host.run("sudo rm /data/network/restore-check")
    # by name from /data/backups only: a path is refused before anything is read
    by_path = host.run(f"echo 'correct horse battery' | smartosctl backup restore /data/backups/{name} "
                       "--password-file -")
    assert by_path.rc == 2 and "not a path" in by_path.stderr
    stick = host.run("mkdir -p ~/stick && echo 'correct horse battery' | smartosctl backup create "
                     "--to ~/stick --password-file - --json")
    assert stick.rc == 0, stick.stderr
    copied = json.loads(stick.stdout)
    assert copied["path"].startswith("/home/admin/stick/") and host.file(copied["path"]).user == "admin"
    assert copied["name"] not in host.check_output("smartosctl backup list")
    host.run("rm -r ~/stick")
    key = host.check_output("smartosctl backup key")
    assert len(key) >= 24 and host.file("/data/smartos/backup.key").mode == 0o600
    assert host.service("smartos").is_running
    assert host.run(f"smartosctl backup delete {name}").rc == 0
    assert name not in host.check_output("smartosctl backup list")


def test_vpn_peer_add_opens_the_port_and_remove_closes_it(host) -> None:
    assert host.run("smartosctl vpn enable --endpoint home.example.net").rc == 0
    assert host.service("wg-quick@wg0").is_running
    assert "51820" not in host.check_output("sudo nft list ruleset")
    added = host.run("smartosctl vpn peer add phone")
    assert added.rc == 0, added.stderr
    assert "Endpoint = home.example.net:51820" in added.stdout and "\u2588" in added.stdout  # a QR code
    assert "udp dport 51820 accept" in host.check_output("sudo nft list ruleset")
    shown = json.loads(host.check_output("smartosctl vpn show --json"))
    public = shown["peers"][0]["public_key"]
    assert public in host.check_output("sudo wg show wg0 peers")
    private = next(line.split(" = ", 1)[1] for line in added.stdout.splitlines()
                   if line.startswith("PrivateKey"))
    assert private not in host.check_output("sudo journalctl SMARTOS_AUDIT=1 -o json --no-pager")
    assert host.run("smartosctl vpn peer remove laptop").rc == 2
    assert host.run("smartosctl vpn peer remove phone").rc == 0
    assert "51820" not in host.check_output("sudo nft list ruleset")
    assert public not in host.check_output("sudo wg show wg0 peers")
    assert host.run("smartosctl vpn disable").rc == 0
    assert not host.service("wg-quick@wg0").is_running


def test_radio_list_help_and_tab_completion(host) -> None:
    assert json.loads(host.check_output("smartosctl radio list --json")) == []
    assert "no USB serial devices" in host.check_output("smartosctl radio list")
    assert "_smartosctl_completion" in host.check_output("bash -lic 'complete -p smartosctl' 2>/dev/null")
    completed = host.check_output("COMP_WORDS='smartosctl fire' COMP_CWORD=1 "
                                  "_SMARTOSCTL_COMPLETE=bash_complete smartosctl")
    assert "firewall" in completed
    helptext = host.check_output("smartosctl --help")
    for verb in ("status", "logs", "ha", "backup", "firewall", "vpn", "radio", "update", "reboot"):
        assert verb in helptext


def test_diagnostics_collects_logs_and_leaves_secrets_out(host) -> None:
    host.run("echo 'api_password: hunter2hunter2' | sudo tee -a /data/homeassistant/secrets.yaml")
    host.run("printf 'http:\\n  api_password: hunter2hunter2\\n' "
             "| sudo tee /data/homeassistant/diag-test.yaml")
    out = host.run("cd ~ && smartosctl diagnostics --json")
    assert out.rc == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["path"].startswith("/home/admin/") and host.file(result["path"]).user == "admin"
    assert {"journal/this-boot.txt", "status.json", "firewall/ruleset.nft", "rauc-status.json"} <= \
        set(result["files"])
    dump = host.check_output(f"tar xzOf {result['path']}")
    assert "smartos.service" in dump and "hunter2hunter2" not in dump
    assert "api_password: ***" in dump
    host.run("sudo rm /data/homeassistant/diag-test.yaml " + result["path"])


def test_network_show_and_a_hostname_that_outlives_an_update(host) -> None:
    shown = json.loads(host.check_output("smartosctl network show --json"))
    assert shown["hostname"] == "smartos-test"
    assert any(a.startswith("10.0.2.15/") for nic in shown["interfaces"] for a in nic["addresses"])
    # QEMU's restricted user network offers no router: the same (no) default route as `ip route`
    routes = json.loads(host.check_output("ip -j route show default"))
    assert shown["default_routes"] == [{"via": r.get("gateway"), "dev": r.get("dev")} for r in routes]
    assert host.run("smartosctl network hostname Bad_Name").rc == 2
    assert host.run("smartosctl network hostname kitchen").rc == 0
    assert host.check_output("hostname") == "kitchen"
    assert host.file("/etc/hostname").content_string.strip() == "kitchen"
    # what an update does (a new root slot with the image's name) and what the next boot does
    host.run("echo smartos-test | sudo tee /etc/hostname && sudo hostname smartos-test")
    assert host.run("sudo systemctl restart smartos-hostname.service").rc == 0
    assert host.check_output("hostname") == "kitchen"
    assert "127.0.1.1\tkitchen" in host.file("/etc/hosts").content_string
    wifi = host.run("echo 'long enough' | smartosctl network wifi Home --country DE --password-file -")
    assert wifi.rc == 4 and "no Wi-Fi adapter" in wifi.stderr  # QEMU's machine has none
    host.run("echo smartos-test | sudo tee /data/smartos/hostname && sudo /usr/lib/smartos/apply-hostname "
             "&& sudo rm /data/smartos/hostname")


@pytest.fixture
def ezsp_stick(host) -> Iterator[str]:
    """A simulated EZSP stick on a pseudo-terminal in the VM (tests/system/ezsp_stick.py: no USB
    stick can be attached to QEMU here), served with Home Assistant's own bellows."""
    script = base64.b64encode((Path(__file__).parent / "ezsp_stick.py").read_bytes()).decode()
    host.run(f"echo {script} | base64 -d > /tmp/ezsp_stick.py")
    host.run("setsid nohup /opt/smartos/venv/bin/python /tmp/ezsp_stick.py > /tmp/stick.out 2>&1 "
             "< /dev/null &")
    for _ in range(60):
        path = host.run("cat /tmp/stick.out").stdout.strip()
        if path.startswith("/dev/pts/"):
            break
        time.sleep(1)
    assert path.startswith("/dev/pts/"), host.run("cat /tmp/stick.out").stdout
    host.run(f"sudo chgrp dialout {path} && sudo chmod 0660 {path}")  # as the radios udev rules do
    yield path
    host.run("pkill -f 'python /tmp/ezsp_stick.py'")


def test_radio_probe_identifies_an_ezsp_stick_and_respects_home_assistant(host, ezsp_stick) -> None:
    probe = host.run(f"smartosctl radio probe {ezsp_stick} --json")
    assert probe.rc == 0, probe.stderr
    found = json.loads(probe.stdout)
    assert (found["stack"], found["firmware"], found["board"], found["protocol_version"]) == \
        ("ezsp", "7.4.4.0 build 0", "simulated-ezsp", 13)
    assert found["library"].startswith("bellows ") and not found["home_assistant_restarted"]
    assert host.run("smartosctl radio probe /dev/ttyUSB9").rc == 2
    # Home Assistant's service holding the port (a stand-in for ZHA using the stick)
    host.run("sudo mkdir -p /run/systemd/system/smartos.service.d && printf '[Service]\\nExecStart=\\n"
             f"ExecStart=/bin/sh -c \"exec sleep 600 < {ezsp_stick}\"\\n' "
             "| sudo tee /run/systemd/system/smartos.service.d/zz-test.conf "
             "&& sudo systemctl daemon-reload && sudo systemctl restart smartos")
    try:
        refused = host.run(f"smartosctl radio probe {ezsp_stick}")
        assert refused.rc == 3 and "Home Assistant is using" in refused.stderr
        assert "--stop-ha" in refused.stderr
        held = host.run(f"smartosctl radio probe {ezsp_stick} --stop-ha --json")
        assert held.rc == 0, held.stderr
        assert json.loads(held.stdout)["home_assistant_restarted"] is True
        assert host.service("smartos").is_running  # started again after the probe
        fds = host.check_output("sudo ls -l /proc/$(systemctl show -P MainPID smartos)/fd")
        assert ezsp_stick in fds  # and holds the port again
    finally:
        host.run("sudo rm /run/systemd/system/smartos.service.d/zz-test.conf && sudo systemctl daemon-reload "
                 "&& sudo systemctl restart smartos")


def test_znp_and_deconz_probes_at_the_library_boundary(host) -> None:
    """See radio_boundary.py: no such sticks or simulators here; the libraries are real."""
    script = base64.b64encode((Path(__file__).parent / "radio_boundary.py").read_bytes()).decode()
    host.run(f"echo {script} | base64 -d > /tmp/radio_boundary.py")
    out = host.run("/opt/smartos/venv/bin/python /tmp/radio_boundary.py")
    assert out.rc == 0, out.stderr
    result = json.loads(out.stdout)
    assert (result["znp"]["stack"], result["znp"]["firmware"], result["znp"]["baudrate"]) == \
        ("znp", "Z-Stack 3.3 build 20230507", 115200)
    assert result["znp"]["library"].startswith("zigpy-znp ")
    assert (result["deconz"]["stack"], result["deconz"]["firmware"]) == ("deconz", "0x26780700")
    assert result["deconz"]["library"].startswith("zigpy-deconz ")
    assert result["nothing"]["stack"] is None
    assert [t.split(":")[0] for t in result["nothing"]["tried"]] == \
        ["ezsp@115200", "ezsp@460800", "znp@115200", "deconz@38400", "deconz@115200"]


def test_ha_check_config_runs_home_assistants_own_check(host, ha_ready) -> None:
    out = host.run("smartosctl ha check-config --json")
    assert out.rc == 0, out.stdout + out.stderr
    assert json.loads(out.stdout)["valid"] is True
    config = "/data/homeassistant/configuration.yaml"
    host.run(f"sudo cp -p {config} /tmp/configuration.yaml.orig")
    host.run(f"printf 'homeassistant:\\n  unit_system: furlongs\\n' | sudo tee -a {config}")
    try:
        bad = host.run("smartosctl ha check-config")
        assert bad.rc == 1 and "unit_system" in bad.stderr, bad.stdout + bad.stderr
    finally:
        host.run(f"sudo cp -p /tmp/configuration.yaml.orig {config}")
