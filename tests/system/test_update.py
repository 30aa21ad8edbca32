"""OS updates end to end on the x86-64 VM: releases built with `smartos release`, served over
HTTP from 127.0.0.1 (the VM sees http://10.0.2.100:8080), installed with smartosctl over ssh.

Runs after the other system tests of the shared VM (it installs into slot B and reboots):
refusals first (nothing may change), then v2 over a lossy link (its reboot is also the x86-64
VM's reboot test, test_reboot.py), then a power cut in the middle
of installing v3, and v3 again, whose Home Assistant never becomes healthy (the device must fall
back by itself). On rpi4 only the RAUC setup (six emulated arm64 boots would take longer than
the rest of the suite). Releases are made with `--fast` (zstd) to save minutes per bundle.
"""

from __future__ import annotations

import json
import os
import random
import shlex
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from smartos_image import keys, release
from smartos_image.config import Board, Channel

from tests.conftest import UPDATE_URL, ha_url, ssh_to
from tests.system import test_reboot
from tests.system.releases import MIGRATED, Releases

pytestmark = pytest.mark.vm
GRUBENV = "sudo grub-editenv /boot/efi/EFI/BOOT/grubenv list"


def _json(host: Any, cmd: str) -> Any:
    out = host.run(cmd)
    assert out.rc == 0, f"{cmd}: {out.stderr}"
    return json.loads(out.stdout)


def _slot_state(host: Any, board: str) -> str:
    return host.check_output(GRUBENV if board == "x86-64" else "sudo fw_printenv")


def _wait(what: str, probe: Callable[[], Any], timeout: float, every: float = 10) -> Any:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            result = probe()
        except Exception:  # ssh while the VM reboots
            result = None
        if result:
            return result
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


def _status(host: Any) -> dict[str, Any]:
    return dict(_json(host, "smartosctl update status --json"))


def _status_while_rebooting(vm: Any, ssh_key: Path) -> dict[str, Any] | None:
    """`update status` over a fresh ssh that gives up when the VM goes away under it (testinfra's
    connection would wait forever across a reboot)."""
    cmd = [*ssh_to(vm, ssh_key), "smartosctl update status --json"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    except subprocess.TimeoutExpired:
        return None
    return dict(json.loads(out.stdout)) if out.returncode == 0 else None


@pytest.fixture(scope="session")
def publish(releases: Releases, release_tree: Path) -> Callable[[str, str], dict[str, Any]]:
    """Publish a release of the test image (tests/system/releases.py: built in the background
    since the VM booted) into a channel of the served tree; returns its index entry."""
    return lambda version, channel: releases.publish(version, channel, release_tree)


# -- bundles that must be refused ----------------------------------------------------------------

def _small_image(work: Path, size: int = 8 << 20) -> Path:
    content = work / "content"
    content.mkdir(exist_ok=True)
    (content / "random").write_bytes(os.urandom(512 << 10))
    image = work / "rootfs.ext4"
    with image.open("wb") as fh:
        fh.truncate(size)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", content, image], check=True)
    return image


def _signed(work: Path, board: Board, version: str, signing: keys.Keys, size: int = 8 << 20) -> Path:
    work.mkdir(parents=True, exist_ok=True)
    out = work / "bundle.raucb"
    release.make_bundle(_small_image(work, size), out, board=board, version=version,
                        description="refusal test", build_id="test", keys=signing, workdir=work,
                        logfile=work / "log")
    return out


@pytest.fixture(scope="session")
def bad_channel(board: str, update_keys: Path, release_tree: Path,
                tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The dev channel, full of releases a device must refuse: version -> what is wrong."""
    work = tmp_path_factory.mktemp("bad-bundles")
    ours = keys.Keys(update_keys)
    theirs = keys.init(work / "foreign-keys", "Someone else")
    me = Board(board)
    other = Board.RPI4 if me is Board.X86_64 else Board.X86_64
    cases: dict[str, tuple[str, Path, str]] = {}  # version -> (what, bundle, manifest hash)

    def signed(name: str, version: str, signer: keys.Keys = ours, board: Board = me,
               size: int = 8 << 20) -> tuple[Path, str]:
        bundle = _signed(work / name, board, version, signer, size)
        if signer is not ours:
            return bundle, "0" * 64
        return bundle, release.manifest_hash(bundle, board=board, keys=ours, workdir=work / name,
                                             logfile=work / "log")

    unsigned = work / "unsigned"
    unsigned.mkdir()
    _small_image(unsigned)
    (unsigned / "manifest.raucm").write_text(
        f"[update]\ncompatible={release.compatible(me)}\nversion=9.0.1\n\n[image.rootfs]\nfilename=rootfs.ext4\n")
    subprocess.run(["mksquashfs", unsigned, work / "unsigned.raucb", "-quiet", "-no-progress"], check=True)
    cases["9.0.1"] = ("unsigned", work / "unsigned.raucb", "0" * 64)
    cases["9.0.2"] = ("signed by another CA", *signed("foreign", "9.0.2", signer=theirs))
    corrupted, digest = signed("corrupt", "9.0.3")
    with corrupted.open("r+b") as fh:  # inside the squashfs payload, which dm-verity covers
        fh.seek(64 << 10)
        fh.write(os.urandom(4096))
    cases["9.0.3"] = ("corrupted", corrupted, digest)
    truncated, digest = signed("truncated", "9.0.4")
    with truncated.open("r+b") as fh:
        fh.truncate(truncated.stat().st_size - 3000)
    cases["9.0.4"] = ("truncated", truncated, digest)
    cases["9.0.5"] = ("for another board", *signed("board", "9.0.5", board=other))
    cases["9.0.6"] = ("larger than the slot", *signed("big", "9.0.6", size=3 << 30))
    bundle, _ = signed("hash", "9.0.7")
    cases["9.0.7"] = ("index hash mismatch", bundle, "f" * 64)
    cases["0.0.1"] = ("a downgrade", *signed("old", "0.0.1"))
    for version, (_, bundle, digest) in cases.items():
        release.publish(bundle, release_tree, channel=Channel.DEV, board=me, version=version,
                        min_version="", notes="", homeassistant="", build_id="test", m_hash=digest,
                        keys=ours)
    return {version: what for version, (what, _, _) in cases.items()}


@pytest.mark.every_board
def test_rauc_is_set_up_for_the_board_and_only_root_may_drive_it(
        host: Any, board: str, update_keys: Path) -> None:
    """On every board (the Pi's U-Boot slot switching is otherwise only exercised by the
    appliance tests' mark-good: its update flow would take six emulated arm64 boots)."""
    conf = host.file("/etc/rauc/system.conf").content_string
    assert f"compatible=smartos-{board}" in conf
    assert ("bootloader=grub" if board == "x86-64" else "bootloader=uboot") in conf
    assert "check-purpose=codesign" in conf and "bundle-formats=verity" in conf
    assert host.file("/etc/rauc/keyring.pem").content_string == (update_keys / "ca.cert.pem").read_text()
    status = _status(host)
    assert status["booted"] == "A" and status["keyring"] and set(status["slots"]) == {"A", "B"}
    assert host.check_output("lsmod | grep -c '^nbd '") == "1"
    assert host.run("systemctl is-enabled smartos-update-check.timer").stdout.strip() == "enabled"
    # Home Assistant's user must not drive RAUC itself (Debian's policy lets everyone)
    denied = host.run("sudo -u homeassistant busctl call de.pengutronix.rauc / "
                      "de.pengutronix.rauc.Installer Mark ss bad other")
    assert denied.rc != 0 and "denied" in denied.stderr.lower(), denied.stderr


def test_every_bad_release_is_refused_and_the_slots_stay_as_they_were(
        host: Any, board: str, ha_ready: float, bad_channel: dict[str, str]) -> None:
    assert host.run(f"smartosctl update url {UPDATE_URL}").rc == 0
    assert host.run("smartosctl update channel dev").rc == 0
    before = _slot_state(host, board)
    version = host.file("/etc/os-release").content_string
    for bad, what in bad_channel.items():
        out = host.run(f"smartosctl update install --no-reboot --version {bad}")
        print(f"{bad} ({what}): exit {out.rc}: {out.stderr.strip()[:300]}")
        assert out.rc != 0, f"{what}: installed"
        if what == "a downgrade":
            assert out.rc == 2 and "refusing a downgrade" in out.stderr
        else:
            assert out.rc == 1 and ("refused" in out.stderr or "failed" in out.stderr), out.stderr
        after = _slot_state(host, board)
        assert after == before, f"{what}: the slot state changed:\n{before}\n{after}"
        assert host.file("/etc/os-release").content_string == version
    status = _status(host)
    assert status["pending"] is None and status["booted"] == "A"
    assert host.run("curl -fsS -o /dev/null http://127.0.0.1:8123/manifest.json").rc == 0
    assert host.run("smartosctl update channel stable").rc == 0


def test_a_forged_expired_replayed_or_foreign_index_is_refused(
        host: Any, board: str, bad_channel: dict[str, str], release_tree: Path, update_keys: Path,
        tmp_path: Path) -> None:
    """The server turned hostile, on the beta channel: each index is refused by the device
    before it reads a release from it, and the newest one it accepted stays its reference."""
    import datetime

    from smartos_cli import channel_index

    ours, theirs = keys.Keys(update_keys), keys.init(tmp_path / "theirs", "Someone else")
    me = Board(board)
    index_file = release.index_path(release_tree, Channel.BETA, me)
    entries = list(release.read_index(release.index_path(release_tree, Channel.DEV, me)).releases[:1])
    now = datetime.datetime.now(datetime.UTC)

    def index(sequence: int, at: datetime.datetime = now, compatible: str = release.compatible(me)
              ) -> channel_index.Index:
        return channel_index.issue(channel="beta", board=board, compatible=compatible, releases=entries,
                                   previous=sequence - 1, valid_days=30, at=at)

    def check() -> Any:
        return host.run("smartosctl update check --json")

    assert host.run("smartosctl update channel beta").rc == 0
    try:
        release.sign_index(index(10), index_file, ours)
        assert check().rc == 0
        first = (index_file.read_bytes(), index_file.with_name("index.json.sig").read_bytes())
        hostile = {
            "signed by another CA": lambda: release.sign_index(index(11), index_file, theirs),
            "changed after signing": lambda: index_file.write_text(
                index(11).to_json().replace('"sequence": 11', '"sequence": 99')),
            "expired": lambda: release.sign_index(index(12, at=now - datetime.timedelta(days=31)),
                                                  index_file, ours),
            "for another board": lambda: release.sign_index(index(13, compatible="smartos-rpi4"),
                                                            index_file, ours),
            "an older one replayed": lambda: (index_file.write_bytes(first[0]),
                                              index_file.with_name("index.json.sig").write_bytes(first[1])),
        }
        release.sign_index(index(14), index_file, ours)
        assert check().rc == 0  # number 14 is now this device's reference
        for what, serve in hostile.items():
            serve()
            out = check()
            print(f"{what}: exit {out.rc}: {out.stderr.strip()[:300]}")
            assert out.rc == 1 and ("refused" in out.stderr or "is for" in out.stderr), (what, out.stderr)
            status = _status(host)
            assert status["pending"] is None and status["booted"] == "A"
        assert "an older index replayed" in check().stderr
        release.sign_index(index(15), index_file, ours)
        assert check().rc == 0  # and the publisher's next index is taken
    finally:
        host.run("smartosctl update channel stable")


SWAP = """
import json, sys
from smartos_cli import update
index = json.loads(sys.argv[1])
entry = next(e for e in index["releases"] if e["version"] == "9.0.7")
release = update.Release(version="9.0.7", url=sys.argv[2] + entry["file"], size=entry["size"],
                         sha256=entry["sha256"], manifest_hash=entry["manifest_hash"], min_version="",
                         notes="", released_at="", homeassistant="")
update.expect(release, "redteam-swap", "0" * 64)  # what `rauc info` vouched for: another image
try:
    print(update.rauc_install(release, "redteam-swap") or "INSTALLED")
finally:
    update.EXPECTED.unlink(missing_ok=True)
"""


def test_a_bundle_swapped_between_the_check_and_the_install_is_refused_by_rauc(
        host: Any, board: str, bad_channel: dict[str, str], release_tree: Path) -> None:
    """What RAUC 1.13 sees when the server hands out another signed bundle for the install than
    the one `rauc info` checked a moment before: the agent's record of the checked image differs
    from the bundle RAUC mounted, and SmartOS's pre-install handler stops it before a slot is
    touched. Played by recording another image's digest, then asking RAUC for a real, signed
    bundle of this board (the test cannot time a swap between two of RAUC's own requests)."""
    before = _slot_state(host, board)
    index = release.index_path(release_tree, Channel.DEV, Board(board)).read_text()
    out = host.run(f"sudo python3 -I -c {shlex.quote(SWAP)} {shlex.quote(index)} "
                   f"{UPDATE_URL}/dev/{board}/")
    print(out.stdout, out.stderr)
    assert "INSTALLED" not in out.stdout and "replaced on the server" in out.stdout, out.stdout + out.stderr
    assert _slot_state(host, board) == before
    assert _status(host)["booted"] == "A"


# -- the full path, x86-64 -----------------------------------------------------------------------

def test_v2_installs_over_a_lossy_link_and_keeps_home_assistant_s_data(
        host: Any, vm: Any, board: str, ha_ready: float, release_server: Any, ssh_key: Path,
        publish: Callable[..., dict[str, Any]], record_property: Callable[[str, Any], None]) -> None:
    """Also the x86-64 VM's reboot test: links planted by Home Assistant, its data and the
    device's identity across the reboot into the new slot (test_reboot.py)."""
    v2 = publish("0.2.0", "stable")
    before = test_reboot.plant(host)
    checked = _json(host, "smartosctl update check --json")
    assert [r["version"] for r in checked["available"]] == ["0.2.0"]
    release_server.stats.reset()
    release_server.set_flaky(25)  # every 25th range request gets no answer
    started = time.monotonic()
    out = host.run("smartosctl update install --json")
    release_server.set_flaky(0)
    assert out.rc == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["installed"] == "0.2.0" and result["slot"] == "B" and result["rebooting"]
    sent, dropped = release_server.stats.bytes_sent, release_server.stats.dropped
    print(f"v2: bundle {v2['size'] / 2**20:.1f} MiB, downloaded {sent / 2**20:.1f} MiB "
          f"({100 * sent / v2['size']:.1f}%), {dropped} requests dropped and retried, "
          f"install {result['seconds']:.0f} s")
    record_property("bundle_mib", round(v2["size"] / 2**20, 1))
    assert dropped > 0  # the lossy link really was lossy
    time.sleep(15)
    vm.wait_for_port(vm.ssh_port, 600)
    _wait("0.2.0 booted", lambda: "VERSION_ID=0.2.0" in host.file("/etc/os-release").content_string, 300)
    assert "rauc.slot=B" in host.file("/proc/cmdline").content_string
    test_reboot.check_after_boot(host, vm, before)
    done = _wait("the health gate confirmed 0.2.0",
                 lambda: (s := _status_while_rebooting(vm, ssh_key)) and s["pending"] is None
                 and s["history"] and s, 900)
    print(f"v2 reboot to confirmed: {time.monotonic() - started:.0f} s after install began")
    assert done["history"][0]["result"] == "installed" and done["history"][0]["version"] == "0.2.0"
    snapshot = done["history"][0]["ha_data"]["snapshot"]  # taken before 0.2.0's first start
    assert snapshot["taken"] and snapshot["database"], snapshot
    print(f"v2: Home Assistant's data snapshot {snapshot['bytes'] / 2**20:.1f} MiB "
          f"in {snapshot['seconds']} s")
    _wait("the snapshot removed once 0.2.0 was confirmed",
          lambda: host.check_output("sudo ls -A /data/ha-snapshot") == "", 120)
    assert done["slots"]["B"]["boot_status"] == "good" and done["slots"]["B"]["version"] == "0.2.0"
    assert host.run("curl -fsS -o /dev/null http://127.0.0.1:8123/manifest.json").rc == 0
    assert "B_OK=1" in host.check_output(GRUBENV) and "ORDER=B A" in host.check_output(GRUBENV)


def _power_cut_during_install(vm: Any, ssh_key: Path, version: str) -> float:
    """Start `update install` over ssh, kill QEMU at a random moment once RAUC is writing
    (the checks before it change nothing), boot again."""
    cut_after = random.uniform(3, 25)
    install = subprocess.Popen([*ssh_to(vm, ssh_key), f"smartosctl update install --version {version} "
                                "--no-reboot"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait("the install to start", lambda: (s := _status_while_rebooting(vm, ssh_key)) and s["pending"],
          300, every=2)
    time.sleep(cut_after)
    vm.power_cut()
    install.wait()
    vm.wait_for_port(vm.ssh_port, 600)
    return cut_after


def test_power_cut_then_a_v3_that_never_gets_healthy_falls_back_to_v2_by_itself(
        host: Any, vm: Any, board: str, publish: Callable[..., dict[str, Any]], ssh_key: Path) -> None:
    """A power cut mid-install leaves the running slot good; the install afterwards succeeds;
    its Home Assistant never becomes healthy (the service changes the data, then fails), so the
    device tries the new slot three times and goes back to 0.2.0 by itself, says why, and puts
    Home Assistant's data back as it was before 0.3.0 first started."""
    publish("0.3.0", "stable")  # its Home Assistant migrates its data, then fails (releases.py)
    ha_version = host.check_output("sudo cat /data/homeassistant/.HA_VERSION")

    cut = _power_cut_during_install(vm, ssh_key, "0.3.0")
    status = _wait("the gate's verdict after the power cut",
                   lambda: (s := _status_while_rebooting(vm, ssh_key)) and s["pending"] is None and s, 600)
    print(f"power cut {cut:.1f} s into the install: booted {status['booted']} {status['version']}, "
          f"attempt {status['history'][0]['result']}")
    assert status["booted"] == "B" and status["version"] == "0.2.0"
    assert status["history"][0]["result"] == "interrupted", status["history"][0]
    assert status["slots"]["B"]["boot_status"] == "good"
    vm.wait_for_http(ha_url(vm), 900)

    out = host.run("smartosctl update install")
    assert out.rc == 0, out.stderr
    started = time.monotonic()
    time.sleep(15)
    done = _wait("the fallback to 0.2.0",
                 lambda: (s := _status_while_rebooting(vm, ssh_key)) and s["history"]
                 and s["history"][0]["result"] == "rolled back" and s, 1500, every=20)
    print(f"v3 install to back on v2: {time.monotonic() - started:.0f} s")
    last = done["history"][0]
    assert last["version"] == "0.3.0" and last["boots"] == 3, last
    assert "smartos.service" in last["reason"], last
    assert done["booted"] == "B" and done["version"] == "0.2.0"
    assert done["slots"]["A"]["boot_status"] == "bad"
    text = host.check_output("smartosctl update status")
    assert "0.2.0 -> 0.3.0  rolled back" in text, text
    assert "put back as it was before the update" in text, text
    assert last["ha_data"]["restore"]["restored"], last
    assert host.check_output("sudo cat /data/homeassistant/.HA_VERSION") == ha_version
    assert host.run("sudo test -e /data/homeassistant/smartos-trial.txt").rc != 0
    trial = last["ha_data"]["restore"]["trial_data"]
    assert host.check_output(f"sudo cat {trial}/.HA_VERSION") == MIGRATED  # kept for the owner
    vm.wait_for_http(ha_url(vm), 900)
