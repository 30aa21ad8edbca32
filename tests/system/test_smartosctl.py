"""smartosctl on the booted image, run as the admin over ssh: the same commands a user types."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.vm


def test_status_json_reports_the_slot_and_home_assistant(host, board, ha_ready) -> None:
    status = json.loads(host.check_output("smartosctl status --json"))
    assert status["slot"] == "A"
    assert status["board"] == board
    assert status["homeassistant_state"] == "active"
    assert status["homeassistant_answers"] is True
    assert status["mdns_name"] == "smartos-test.local"
    assert {d["mount"] for d in status["disks"]} == {"/", "/data"}
    assert any("10.0.2.15" in ips for ips in status["addresses"].values())
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


def test_radio_list_and_help_work_without_a_stick(host) -> None:
    assert json.loads(host.check_output("smartosctl radio list --json")) == []
    assert "no USB serial devices" in host.check_output("smartosctl radio list")
    helptext = host.check_output("smartosctl --help")
    for verb in ("status", "logs", "ha", "backup", "firewall", "vpn", "radio", "update", "reboot"):
        assert verb in helptext
