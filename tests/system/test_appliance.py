"""The booted appliance, checked over ssh with testinfra: what a user and an attacker would see.

The VM runs under QEMU (TCG) with user-mode networking restricted to the host forwards, so the
guest has no route to the internet: Home Assistant must come up from what the image carries.
"""

import json
import re
import shlex
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ha_url, ssh_to

pytestmark = [pytest.mark.vm, pytest.mark.every_board]


def test_smartos_service_runs_home_assistant_as_its_own_user(host, ha_ready) -> None:
    service = host.service("smartos.service")
    assert service.is_enabled
    assert service.is_running
    pid = host.check_output("systemctl show -p MainPID --value smartos.service")
    user = host.check_output(f"ps -o user= -p {pid}")
    assert user == "homeassistant"
    assert host.user("homeassistant").uid != 0


def test_home_assistant_answers_with_onboarding(vm, ha_ready) -> None:
    with urllib.request.urlopen(ha_url(vm, "/api/onboarding"), timeout=30) as resp:
        steps = json.load(resp)
    assert {"step": "user", "done": False} in steps
    with urllib.request.urlopen(ha_url(vm, "/onboarding.html"), timeout=30) as resp:
        page = resp.read().decode()
    scripts = re.findall(r'"(/frontend_latest/[^"]+\.js)"', page)
    assert scripts, page[:500]
    request = urllib.request.Request(ha_url(vm, scripts[0]),
                                     headers={"Accept-Encoding": "gzip, br"})
    with urllib.request.urlopen(request, timeout=30) as resp:
        assert resp.status == 200
        assert len(resp.read()) > 1000


def test_home_assistant_installed_nothing_at_first_start(host, ha_ready) -> None:
    """Everything a fresh install sets up was in the image: no install attempts in the log."""
    log = host.check_output("sudo journalctl -u smartos.service -b --no-pager")
    assert "Attempting install of" not in log
    assert "Unable to install package" not in log
    assert "Home Assistant core failed to initialize" not in log


def test_guest_has_no_route_to_the_internet(host) -> None:
    result = host.run("curl -s -m 8 -o /dev/null http://deb.debian.org/")
    assert result.rc != 0


def test_ssh_refuses_passwords_and_root(host, vm, ssh_key: Path) -> None:
    config = host.check_output("sudo sshd -T")
    assert "passwordauthentication no" in config
    assert "permitrootlogin no" in config
    probe = subprocess.run(
        ["ssh", "-p", str(vm.ssh_port), "-o", "BatchMode=yes", "-o", "PubkeyAuthentication=no",
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


def test_firewall_drops_inbound_by_default_and_opens_its_ports_to_local_sources_only(host) -> None:
    assert "policy drop" in host.check_output("sudo nft list chain inet smartos input")
    local = host.check_output("sudo nft list chain inet smartos local_only")
    assert 'iifname != "wg0" ip saddr != @local4 return' in local
    assert "tcp dport { 22, 8123 } accept" in local and "udp dport 5353 accept" in local
    assert host.service("smartos-localnets.service").is_running
    # QEMU's network (10.0.2.15/24) is the subnet the box is on: written where the ruleset reads it
    assert "10.0.2.0/24" in host.check_output("cat /run/smartos-localnets/attached.nft")


def test_radio_udev_rules_are_installed_and_valid(host) -> None:
    rules = host.file("/etc/udev/rules.d/70-smartos-radios.rules")
    assert rules.exists
    assert 'SYMLINK+="zigbee"' in rules.content_string
    assert host.run("udevadm verify /etc/udev/rules.d/70-smartos-radios.rules").rc == 0


def test_every_usb_matcher_of_the_shipped_release_names_a_stick(host) -> None:
    """Home Assistant's own table of the sticks its integrations recognise, read from the venv
    on the device, run against the device's rules (the udev matcher of test_radios_udev.py)."""
    from tests.roles.test_radios_udev import parse, uncovered

    usb = json.loads(host.check_output(
        "/opt/smartos/venv/bin/python -I -c 'import json; from homeassistant.generated.usb "
        "import USB; print(json.dumps(USB))'"))
    assert len(usb) >= 20 and any(m["domain"] == "zha" for m in usb)
    ha_file = "/usr/lib/udev/rules.d/69-smartos-homeassistant-radios.rules"
    assert host.run(f"udevadm verify {ha_file}").rc == 0
    rules = parse(host.file(ha_file).content_string) \
        + parse(host.file("/etc/udev/rules.d/70-smartos-radios.rules").content_string)
    assert uncovered(rules, usb) == []


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


def test_userspace_is_the_boards_architecture(host, board) -> None:
    expected = {"x86-64": "x86_64", "rpi4": "aarch64", "rpi3": "aarch64"}[board]
    assert host.check_output("uname -m") == expected
    assert host.check_output("/opt/smartos/venv/bin/python -c 'import platform; print(platform.machine())'") \
        == expected


def test_the_compiled_packages_pypi_has_no_wheel_for_work(host) -> None:
    """The C/C++ packages the build compiles itself (on the Pi images cross-compiled for aarch64,
    image/wheels.py) load and compute in the venv's Python on the device."""
    code = """
import json, lru, netifaces, pymicro_vad, pyspeex_noise
cache = lru.LRU(2)
for key in (1, 2, 3):
    cache[key] = key
vad = pymicro_vad.MicroVad()
speech = [vad.Process10ms(bytes(320)) for _ in range(300)]  # 3 s of silence
quiet = pyspeex_noise.AudioProcessor(0, 0).Process10ms(bytes(320)).audio
print(json.dumps({"lru": list(cache.keys()), "lo": "lo" in netifaces.interfaces(),
                  "vad": [p for p in speech if p >= 0][-1:], "speex": quiet == bytes(320)}))
"""
    out = json.loads(host.check_output(f"/opt/smartos/venv/bin/python -c {shlex.quote(code)}"))
    assert out["lru"] == [3, 2] and out["lo"] and out["speex"], out
    assert len(out["vad"]) == 1 and 0 <= out["vad"][0] < 0.5, out  # silence: a low speech probability


def test_kernel_modules_are_stored_plain_and_load(host) -> None:
    """The image keeps modules uncompressed (one solid compression in the image instead of
    Debian's per-module xz); the firewall's nf_tables and the virtio NIC load from them."""
    release = host.check_output("uname -r")
    assert not host.check_output(f"find /usr/lib/modules/{release} -name '*.ko.xz' | head -1")
    assert ".ko:" in host.check_output(f"grep -m1 nf_tables /usr/lib/modules/{release}/modules.dep")
    loaded = host.check_output("cut -d' ' -f1 /proc/modules").split()
    assert "nf_tables" in loaded


def test_cloud_sign_in_client_loads_its_aws_model(host) -> None:
    """botocore's service models are stored as plain JSON in the image (see _trim_venv): the
    client Home Assistant Cloud signs in with (Cognito, through pycognito) still builds."""
    code = ("import boto3; c = boto3.session.Session().client('cognito-idp', region_name='eu-west-1'); "
            "print(c.meta.service_model.service_name)")
    assert host.check_output(f'/opt/smartos/venv/bin/python -c "{code}"') == "cognito-idp"


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


def test_slot_a_is_booted_and_confirmed_once_healthy(host, board, ha_ready) -> None:
    """The boot loader counted a try on slot A; the health gate's `rauc status mark-good` (through
    RAUC's grub or uboot backend) gave it back: at once, as this is no trial boot of an update
    (those wait for Home Assistant: tests/system/test_update.py)."""
    assert "rauc.slot=A" in host.file("/proc/cmdline").content_string
    slot_state = "/boot/efi" if board == "x86-64" else "/boot/firmware"
    assert host.mount_point(slot_state).exists, f"{slot_state} (the slot state) is not mounted"
    assert slot_state in host.check_output("systemctl show -P RequiresMountsFor smartos-health.service")
    host.run("sudo systemctl start smartos-health.service")  # waits for the gate if still running
    assert host.service("smartos-health.service").is_running or host.run(
        "systemctl is-active smartos-health.service").stdout.strip() == "active"
    status = json.loads(host.check_output("sudo rauc status --output-format=json"))
    assert status["booted"] == "A"
    if board == "x86-64":
        env = host.check_output("sudo grub-editenv /boot/efi/EFI/BOOT/grubenv list")
        assert "A_OK=1" in env
        assert "A_TRY=0" in env, env
    else:
        # boot.scr took one try off (3 -> 2) when it booted A; mark-good set it back to 3
        env = host.check_output("sudo fw_printenv")
        assert "BOOT_A_LEFT=3" in env, env
        assert "BOOT_ORDER=A" in env, env


def _probe_wheel(path: Path) -> Path:
    """A tiny pure-Python wheel, standing in for an integration's requirement from PyPI (the VM
    has no internet)."""
    import zipfile

    wheel = path / "smartos_probe-1.0-py3-none-any.whl"
    files = {
        "smartos_probe.py": "WHERE = __file__\n",
        "smartos_probe-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: smartos-probe\nVersion: 1.0\n",
        "smartos_probe-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                             "Tag: py3-none-any\n",
    }
    files["smartos_probe-1.0.dist-info/RECORD"] = "".join(f"{n},,\n" for n in files) + \
        "smartos_probe-1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return wheel


def test_runtime_packages_go_to_the_data_partition(host, vm, ssh_key: Path, tmp_path: Path) -> None:
    """An install the way Home Assistant runs one (python -m uv pip install, as its user, with its
    constraints) lands on /data, not in the read-only venv, and is importable by Home Assistant."""
    wheel = _probe_wheel(tmp_path)
    with wheel.open("rb") as fh:
        subprocess.run([*ssh_to(vm, ssh_key), f"mkdir -p /tmp/wheels && cat > /tmp/wheels/{wheel.name}"],
                       stdin=fh, check=True, timeout=60)
    venv = "/opt/smartos/venv"
    constraints = host.check_output(
        f"ls {venv}/lib/python3*/site-packages/homeassistant/package_constraints.txt")
    env = "UV_CONFIG_FILE=/etc/smartos/uv.toml UV_CACHE_DIR=/data/python-deps/.uv-cache"
    host.run_test(f"sudo -u homeassistant env {env} {venv}/bin/python -m uv pip install --quiet "
                  f"smartos-probe==1.0 --index-strategy unsafe-first-match --upgrade "
                  f"--constraint {constraints} --no-index --find-links /tmp/wheels")
    where = host.check_output(f"sudo -u homeassistant {venv}/bin/python -c "
                              "'import smartos_probe; print(smartos_probe.WHERE)'")
    assert where.startswith("/data/python-deps/current/"), where
    assert host.run(f"ls {venv}/lib/python3*/site-packages/smartos_probe.py").rc != 0


def test_a_new_venv_starts_with_its_own_empty_runtime_package_directory(host) -> None:
    """What an OS update that brings a new venv (a new Python or Home Assistant) does to the
    run-time packages: the venv's id changes, smartos-prepare points `current` at a new, empty
    directory (no binary built for the old Python is ever loaded) and keeps the old one for a
    rollback. Played here by changing the id and running the real script as Home Assistant's
    user (as smartos.service does before it starts Home Assistant), then going back."""
    deps = "/data/python-deps"
    old = host.file("/etc/smartos/venv-id").content_string.strip()
    try:
        host.run_test("echo smartos-test-new-venv | sudo tee /etc/smartos/venv-id")
        host.run_test("sudo -u homeassistant /usr/lib/smartos/prepare-deps")
        assert host.file(f"{deps}/current").linked_to == f"{deps}/smartos-test-new-venv"
        assert host.check_output(f"ls -A {deps}/current/") == ""
        assert host.file(f"{deps}/{old}").is_directory  # kept for going back
    finally:
        host.run_test(f"echo {old} | sudo tee /etc/smartos/venv-id")
        host.run_test("sudo -u homeassistant /usr/lib/smartos/prepare-deps")  # a rollback: the old one
        host.run_test(f"sudo -u homeassistant rm -rf {deps}/smartos-test-new-venv")
    assert host.file(f"{deps}/current").linked_to == f"{deps}/{old}"
