"""Red team: Home Assistant's code turned hostile, on the booted x86-64 image.

Each attack runs as Home Assistant's own code runs (redteam.as_home_assistant: its user, its
capabilities, smartos.service's sandbox, read from the unit on the device) and must fail,
leaving rules, keys and files as they were. Links planted in Home Assistant's trees and a
reboot are in test_reboot.py: one reboot serves both. docs/security.md lists each promise and
the test that keeps it."""

from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
import tarfile

import pytest

from tests.conftest import ssh_to
from tests.system.redteam import as_home_assistant
from tests.system.test_smartosctl import ezsp_stick  # noqa: F401  (a fixture)

pytestmark = pytest.mark.vm

AGENT = "org.smartos.Agent1 /org/smartos/Agent1 org.smartos.Agent1"
REFUSED = ("Access denied", "Rejected send message")  # what busctl prints for the bus's refusal


def test_home_assistant_runs_with_two_capabilities_and_a_tight_sandbox(host) -> None:
    pid = host.check_output("systemctl show -P MainPID smartos.service")
    caps = int(host.check_output(f"awk '/^CapEff/ {{print $2}}' /proc/{pid}/status"), 16)
    assert caps == (1 << 13) | (1 << 10), hex(caps)  # CAP_NET_RAW, CAP_NET_BIND_SERVICE
    figures = {}
    for unit in host.check_output("systemctl list-unit-files 'smartos*.service' --no-legend "
                                  "| awk '{print $1}'").split():
        out = host.check_output(f"systemd-analyze security --no-pager {unit} | tail -n 1")
        figures[unit] = float(re.search(r": (\d+\.\d+)", out)[1])  # type: ignore[index]
    print("systemd-analyze security on the device:", json.dumps(figures, sort_keys=True))
    assert figures["smartos.service"] <= 2.5
    assert figures["smartos-localnets.service"] <= 2.5
    assert figures["smartos-ha-data.service"] <= 2.5
    assert figures["smartos-agent.service"] < 9


def test_each_capability_left_is_the_one_a_feature_needs(host, ha_ready) -> None:
    """CAP_NET_RAW: DHCP discovery listens on a packet socket; CAP_NET_BIND_SERVICE:
    emulated_hue answers Alexa on port 80. Taken away, exactly these fail."""
    py = "/opt/smartos/venv/bin/python -c"
    packet = f"{py} 'import socket; socket.socket(socket.AF_PACKET, socket.SOCK_RAW)'"
    low_port = f"{py} 'import socket; socket.socket().bind((\"127.0.0.1\", 80))'"
    assert as_home_assistant(host, packet).rc == 0
    assert as_home_assistant(host, low_port).rc == 0
    # (an empty assignment first: systemd merges repeated AmbientCapabilities= lines)
    no_raw = as_home_assistant(host, packet, "AmbientCapabilities=",
                               "AmbientCapabilities=CAP_NET_BIND_SERVICE")
    assert no_raw.rc != 0 and "Operation not permitted" in no_raw.stderr
    no_bind = as_home_assistant(host, low_port, "AmbientCapabilities=", "AmbientCapabilities=CAP_NET_RAW")
    assert no_bind.rc != 0 and "Permission denied" in no_bind.stderr


def test_home_assistant_cannot_change_the_firewall_or_read_the_vpn_key(host) -> None:
    assert host.run("smartosctl vpn enable").rc == 0
    assert host.run("smartosctl vpn peer add redteam").rc == 0
    try:
        rules = host.check_output("sudo nft list ruleset")
        keys = host.check_output("sudo sh -c 'sha256sum /data/wireguard/*'")
        flush = as_home_assistant(host, "nft flush ruleset")
        assert flush.rc != 0 and "Operation not permitted" in flush.stderr
        assert as_home_assistant(host, "nft add rule inet smartos input accept").rc != 0
        assert host.check_output("sudo nft list ruleset") == rules
        key = as_home_assistant(host, "wg show wg0 private-key")
        assert key.rc != 0 and "Operation not permitted" in key.stderr
        assert as_home_assistant(host, "cat /data/wireguard/*").rc != 0
        assert as_home_assistant(host, "ip link set wg0 down").rc != 0
        assert host.check_output("sudo sh -c 'sha256sum /data/wireguard/*'") == keys
        assert ",UP," in host.check_output("ip link show wg0")  # still up
    finally:
        host.run("smartosctl vpn peer remove redteam")
        host.run("smartosctl vpn disable")


def test_home_assistant_cannot_touch_the_snapshot_of_its_data_an_update_keeps(host) -> None:
    """/data/ha-snapshot belongs to Home Assistant's user (the snapshot is taken and put back as
    that user, never as root), but its service's sandbox has it read-only: code running in Home
    Assistant cannot plant what a rollback would put back."""
    assert host.check_output("stat -c %U:%a /data/ha-snapshot") == "homeassistant:700"
    planted = as_home_assistant(host, "touch /data/ha-snapshot/redteam")
    assert planted.rc != 0 and "Read-only file system" in planted.stderr, planted.stderr


def test_home_assistant_may_call_only_its_own_methods_on_the_bus(host) -> None:
    allowed = as_home_assistant(host, f"busctl call {AGENT}.Update Status")
    assert allowed.rc == 0 and '\\"channel\\"' in allowed.stdout, allowed.stdout + allowed.stderr
    for attack in ("Backup Restore ss smartos-x.tar.gz.gpg secret", "Backup Create s secret",
                   "Backup Key", "Backup Delete s x", "Firewall Allow sssb 1-65535/tcp '' '' true",
                   "Update Configure ss url http://attacker.example", "Update Install sbb 0.0.1 true true",
                   "Vpn AddPeer s attacker", "Vpn Show", "Network SetWifi sss x y DE",
                   "Support Diagnostics", "Radio Probe sb /dev/ttyS0 true", "HomeAssistant CheckConfig",
                   "HomeAssistant Control s stop"):
        interface, rest = attack.split(" ", 1)
        refused = as_home_assistant(host, f"busctl call {AGENT}.{interface} {rest}")
        assert refused.rc != 0 and any(r in refused.stderr for r in REFUSED), (attack, refused.stderr)


def test_home_assistant_can_back_up_but_not_read_the_backups(host) -> None:
    before = set(host.check_output("sudo ls -A /data/backups").split())
    made = as_home_assistant(host, f"busctl --timeout=900 call {AGENT}.Backup CreateDefault")
    assert made.rc == 0, made.stderr
    new = set(host.check_output("sudo ls /data/backups").split()) - before
    assert len(new) == 1
    name = new.pop()
    assert name in host.check_output("smartosctl backup list")  # the admin sees it
    assert as_home_assistant(host, "ls /data/backups").rc != 0
    assert as_home_assistant(host, f"cat /data/backups/{name}").rc != 0
    assert as_home_assistant(host, "cat /data/smartos/backup.key").rc != 0
    assert host.run(f"smartosctl backup delete {name}").rc == 0


PAYLOAD = """import os
open(f"/data/homeassistant/redteam-ran-as-{os.getuid()}", "w").close()
try:
    open("/run/redteam-ran-as-root", "w").close()
except OSError:
    pass
def install():
    pass
"""
MANIFEST = json.dumps({"domain": "redteam", "name": "Red team", "version": "1.0", "documentation": "",
                       "codeowners": [], "requirements": []})


def test_modules_home_assistant_plants_never_run_as_root(host, ezsp_stick) -> None:  # noqa: F811
    """Debian's sitecustomize imports apport_python_hook from sys.path, and Home Assistant's
    venv puts the run-time package directory (Home Assistant's to write) on it; check_config
    imports custom components. Every root-run path that starts that venv must not run them."""
    config = "/data/homeassistant/configuration.yaml"
    host.run_test(f"sudo cp -p {config} /tmp/configuration.yaml.redteam")
    script = PAYLOAD.replace('"', '\\"')
    plant = ["mkdir -p /data/homeassistant/custom_components/redteam"]
    for where in ("/data/python-deps/current", "/data/homeassistant"):
        plant += [f'printf "%s" "{script}" > {where}/{name}.py'
                  for name in ("sitecustomize", "usercustomize", "apport_python_hook")]
    plant += [f'printf "%s" "{script}" > /data/homeassistant/custom_components/redteam/__init__.py',
              f"echo '{MANIFEST}' > /data/homeassistant/custom_components/redteam/manifest.json",
              f"echo 'redteam:' >> {config}"]
    try:
        planted = as_home_assistant(host, " && ".join(plant))
        assert planted.rc == 0, planted.stderr
        probe = host.run(f"smartosctl radio probe {ezsp_stick} --json")  # root's agent, HA's venv
        assert probe.rc == 0 and json.loads(probe.stdout)["stack"] == "ezsp", probe.stderr
        host.run("smartosctl ha check-config")
        host.run("sudo smartosctl status && sudo smartosctl update status")
        ran = host.check_output("sudo ls /data/homeassistant").split()
        assert "redteam-ran-as-8123" in ran  # the plants were live: they ran, as Home Assistant
        assert not [f for f in ran if f.startswith("redteam-ran-as-") and f != "redteam-ran-as-8123"]
        assert host.run("sudo test -e /run/redteam-ran-as-root").rc != 0
    finally:
        host.run(f"sudo cp -p /tmp/configuration.yaml.redteam {config}")
        as_home_assistant(host, "rm -rf /data/homeassistant/custom_components/redteam "
                          "/data/homeassistant/redteam-ran-as-* " + " ".join(
                              f"{d}/{n}.py" for d in ("/data/python-deps/current", "/data/homeassistant")
                              for n in ("sitecustomize", "usercustomize", "apport_python_hook")))


def test_a_crafted_backup_given_to_the_admins_restore_changes_nothing(host, vm, ssh_key, tmp_path) -> None:
    name = "smartos-redteam-20260101-000000.tar.gz.gpg"
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    blob = subprocess.run(["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback",
                           "--passphrase", "redteam-password", "--symmetric", "--output", "-"],
                          input=_archive(), capture_output=True, check=True).stdout
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=False)
    subprocess.run([*ssh_to(vm, ssh_key), f"sudo tee /data/backups/{name} > /dev/null"], input=blob,
                   check=True, timeout=60)
    state = "sudo sh -c 'find /data/smartos /data/wireguard /data/firewall -type f | sort | xargs sha256sum'"
    before = host.check_output(state), host.check_output("sudo nft list ruleset")
    try:
        refused = host.run(f"echo redteam-password | smartosctl backup restore {name} --password-file -")
        assert refused.rc == 2 and "nothing changed" in refused.stderr, refused.stdout + refused.stderr
        assert (host.check_output(state), host.check_output("sudo nft list ruleset")) == before
        assert host.run("sudo test -e /run/redteam-restored").rc != 0
    finally:
        host.run(f"sudo rm -f /data/backups/{name}")


def _archive() -> bytes:
    entries = {
        "homeassistant/configuration.yaml": b"default_config:\n",
        "wireguard/wg0.conf": b"[Interface]\nPostUp = touch /run/redteam-restored\n",
        "smartos/vpn.json": json.dumps({"enabled": True, "port": 51820, "subnet": "10.77.0.0/24",
                                        "endpoint": "", "peers": [{"name": "x\nPostUp = touch /run/x",
                                                                   "public_key": "A" * 43 + "=",
                                                                   "address": "10.77.0.2"}]}).encode(),
    }
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        manifest = json.dumps({"format": 1, "created": "2026-01-01T00:00:00Z", "hostname": "evil",
                               "files": {n: hashlib.sha256(b).hexdigest() for n, b in entries.items()}})
        for name, blob in (("MANIFEST.json", manifest.encode()), *entries.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(blob), 0o644
            tar.addfile(info, io.BytesIO(blob))
    return buf.getvalue()
