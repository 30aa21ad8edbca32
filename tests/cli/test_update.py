"""The update library's decisions (which release, what is refused) and the health gate's, with
RAUC, the boot loader and the clock replaced by recorders: they run in the QEMU tests
(tests/system/test_update.py); here every branch is reached in milliseconds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from smartos_cli import health, update
from smartos_cli.errors import CtlError, Exit
from smartos_cli.paths import Paths

INDEX_URL = "http://updates.example/stable/x86-64/index.json"


def _index(*versions: tuple[str, str], compatible: str = "smartos-x86-64") -> bytes:
    return json.dumps({"format": 1, "channel": "stable", "board": "x86-64", "compatible": compatible,
                       "releases": [{"version": v, "file": f"smartos-{v}-x86-64.raucb", "size": 1,
                                     "sha256": "a" * 64, "manifest_hash": "b" * 64,
                                     "min_version": m, "notes": ""} for v, m in versions]}).encode()


def test_index_entries_resolve_against_the_index_url_newest_first() -> None:
    releases = update.parse_index(_index(("1.0.0", ""), ("1.10.0", ""), ("1.2.0", "")), INDEX_URL,
                                  "smartos-x86-64")
    assert [r.version for r in releases] == ["1.10.0", "1.2.0", "1.0.0"]
    assert releases[0].url == "http://updates.example/stable/x86-64/smartos-1.10.0-x86-64.raucb"


@pytest.mark.parametrize(("data", "message"), [
    (b"<html>", "not a JSON channel index"),
    (b'{"format": 7}', "not a SmartOS channel index"),
    (_index(("1.0.0", ""), compatible="smartos-rpi4"), "this device is 'smartos-x86-64'"),
    (b'{"format": 1, "compatible": "smartos-x86-64", "releases": [{"version": "1.0"}]}', "incomplete"),
])
def test_a_bad_index_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(CtlError, match=message):
        update.parse_index(data, INDEX_URL, "smartos-x86-64")


def _releases(*versions: tuple[str, str]) -> list[update.Release]:
    return update.parse_index(_index(*versions), INDEX_URL, "smartos-x86-64")


def test_the_newest_release_is_chosen_and_up_to_date_is_not_an_error() -> None:
    assert update.choose(_releases(("1.1.0", ""), ("1.2.0", "")), "1.0.0").version == "1.2.0"
    with pytest.raises(CtlError, match="already up to date") as exc:
        update.choose(_releases(("1.0.0", "")), "1.0.0")
    assert exc.value.code == Exit.OK


def test_a_downgrade_needs_allow_downgrade() -> None:
    releases = _releases(("1.0.0", ""), ("2.0.0", ""))
    with pytest.raises(CtlError, match="refusing a downgrade"):
        update.choose(releases, "2.0.0", "1.0.0")
    assert update.choose(releases, "2.0.0", "1.0.0", allow_downgrade=True).version == "1.0.0"


def test_a_release_that_does_not_update_from_this_version_names_the_one_to_install_first() -> None:
    with pytest.raises(CtlError, match="install 2.0.0 first"):
        update.choose(_releases(("2.0.0", "1.0.0"), ("3.0.0", "2.0.0")), "1.5.0")


def test_an_unknown_version_lists_what_the_channel_has() -> None:
    with pytest.raises(CtlError, match="it has: 1.1.0"):
        update.choose(_releases(("1.1.0", "")), "1.0.0", "9.9.9")


def test_the_signed_manifest_must_match_what_the_index_promised() -> None:
    release = _releases(("1.1.0", ""))[0]
    good = {"compatible": "smartos-x86-64", "version": "1.1.0", "hash": "b" * 64,
            "images": [{"rootfs": {"size": 100}}]}
    update.verify_bundle(good, release, "smartos-x86-64", 100)
    for bad, message in (({"compatible": "smartos-rpi4"}, "bundle is for 'smartos-rpi4'"),
                         ({"version": "1.1.1"}, "the signed bundle is '1.1.1'"),
                         ({"hash": "c" * 64}, "manifest hash does not match"),
                         ({"images": [{"rootfs": {"size": 101}}]}, "the slot has")):
        with pytest.raises(CtlError, match=message):
            update.verify_bundle(good | bad, release, "smartos-x86-64", 100)


def test_settings_the_owner_changes_are_validated_and_kept_on_data(tmp_path: Path) -> None:
    paths = Paths(data=tmp_path)
    built = tmp_path / "built.json"
    built.write_text(json.dumps({"url": "https://u.example", "channel": "stable", "policy": "notify",
                                 "compatible": "smartos-x86-64"}))
    update.change_settings(paths, channel="beta")
    assert update.load_settings(paths, built).channel == "beta"
    assert update.load_settings(paths, built).url == "https://u.example"
    for bad in ({"channel": "nightly"}, {"policy": "always"}, {"url": "ftp://x"}):
        with pytest.raises(CtlError):
            update.change_settings(paths, **bad)
    assert update.load_settings(paths, built).channel == "beta"


class Device:
    """The gate's world: a state file on a temporary /data, and recorders for RAUC and reboots."""

    def __init__(self, tmp_path: Path, health: list[tuple[bool, str]]) -> None:
        self.paths = Paths(data=tmp_path)
        self.marks: list[tuple[str, str]] = []
        self.reboots = 0
        self.health = health
        self.time = 0.0
        self.boot = 0

    def pending(self, **kw: Any) -> None:
        state = update.State(pending={"version": "2.0.0", "from": "1.0.0", "slot": "B", "from_slot": "A",
                                      "state": "installed", "attempts": [], **kw})
        update.save_state(self.paths, state)

    def run(self, booted: str, timeout: int = 60) -> str:
        self.boot += 1

        def check() -> tuple[bool, str]:
            return self.health.pop(0) if len(self.health) > 1 else self.health[0]

        def sleep(s: float) -> None:
            self.time += s

        return health.gate(self.paths, booted, timeout=timeout, check=check,
                           mark=lambda st, slot: self.marks.append((st, slot)),
                           reboot=lambda: setattr(self, "reboots", self.reboots + 1),
                           boot_id=lambda: f"boot-{self.boot}", sleep=sleep, clock=lambda: self.time)

    @property
    def state(self) -> update.State:
        return update.load_state(self.paths)


def test_an_ordinary_boot_is_confirmed_at_once_whatever_home_assistant_does(tmp_path: Path) -> None:
    device = Device(tmp_path, [(False, "Home Assistant does not answer")])
    assert "not a trial boot" in device.run("A")
    assert device.marks == [("good", "booted")] and device.reboots == 0


def test_a_healthy_trial_boot_confirms_the_new_slot(tmp_path: Path) -> None:
    device = Device(tmp_path, [(False, "starting"), (False, "starting"), (True, "")])
    device.pending()
    assert "healthy after 10 s" in device.run("B")
    assert device.marks == [("good", "booted")]
    assert device.state.pending is None
    assert device.state.history[-1]["result"] == "installed"


def test_an_unhealthy_trial_reboots_then_the_fallback_boot_records_why(tmp_path: Path) -> None:
    device = Device(tmp_path, [(False, "Home Assistant does not answer on 8123")])
    device.pending()
    for _ in range(3):  # the boot loader's three tries of slot B
        assert "rebooting" in device.run("B", timeout=30)
    assert device.reboots == 3 and device.marks == []
    assert len(device.state.pending["attempts"]) == 3  # type: ignore[index]
    assert "failed in slot B after 3 boot(s)" in device.run("A")
    assert device.marks == [("bad", "other"), ("good", "booted")]
    last = device.state.history[-1]
    assert last["result"] == "rolled back" and last["boots"] == 3
    assert "not healthy within 30 s" in last["reason"]


def test_a_crashing_service_fails_the_trial_without_waiting_for_the_timeout(tmp_path: Path) -> None:
    device = Device(tmp_path, [(False, "smartos.service crashed 5 times")])
    device.pending()
    device.run("B", timeout=900)
    assert device.time == 0 and device.reboots == 1
    assert device.state.pending["attempts"][0]["reason"] == "smartos.service crashed 5 times"  # type: ignore[index]


def test_an_install_cut_short_is_recorded_as_interrupted_and_nothing_is_marked_bad(tmp_path: Path) -> None:
    device = Device(tmp_path, [(True, "")])
    device.pending(state="installing")
    assert "interrupted" in device.run("A")
    assert device.marks == [("good", "booted")]
    assert device.state.history[-1]["result"] == "interrupted"


def test_the_same_boot_is_counted_once_when_the_gate_runs_again(tmp_path: Path) -> None:
    device = Device(tmp_path, [(False, "x")])
    device.pending()
    device.run("B", timeout=10)
    device.boot -= 1  # the service restarted within the same boot
    device.run("B", timeout=10)
    assert len(device.state.pending["attempts"]) == 1  # type: ignore[index]


def test_the_daily_check_does_not_reinstall_a_release_that_rolled_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = Paths(data=tmp_path)
    update.change_settings(paths, url="http://u.example", policy="install")
    state = update.State(history=[{"version": "2.0.0", "result": "rolled back", "reason": "x"}])
    update.save_state(paths, state)
    monkeypatch.setattr(update, "BUILT_SETTINGS", tmp_path / "none.json")
    monkeypatch.setattr(update, "check", lambda p: {"current": "1.0.0", "available": [{"version": "2.0.0"}]})
    monkeypatch.setattr(update, "install", lambda p: pytest.fail("installed a release that rolled back"))
    assert update.auto(paths)["result"] == "available"
