"""smartosctl backup: encrypted archives of Home Assistant's config and SmartOS's settings,
made and restored with the real gpg, tar and SQLite; a wrong password or a damaged archive
changes nothing."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path

import pytest
from smartos_cli import backup
from smartos_cli.errors import CtlError

from tests.conftest import needs_root

PASSWORD = "correct horse battery"


def tree_state(data: Path) -> dict[str, bytes]:
    return {str(p.relative_to(data)): p.read_bytes() for p in sorted(data.rglob("*"))
            if p.is_file() and ".restore" not in str(p)}


@pytest.fixture
def data(tmp_path: Path) -> Path:
    needs_root()  # restore sets owners
    root = tmp_path / "data"
    (root / "homeassistant" / ".storage").mkdir(parents=True)
    (root / "homeassistant" / "configuration.yaml").write_text("default_config:\n")
    (root / "homeassistant" / ".storage" / "core.config_entries").write_text('{"entries": []}')
    (root / "homeassistant" / "home-assistant.log").write_text("not backed up\n")
    (root / "smartos").mkdir()
    (root / "smartos" / "firewall.json").write_text('{"version": 1, "rules": []}\n')
    (root / "smartos" / "machine-id").write_text("this device\n")
    (root / "wireguard").mkdir(mode=0o700)
    (root / "wireguard" / "wg0.conf").write_text("[Interface]\nPrivateKey = secret\n")
    return root


class Recorder:
    def __init__(self, fail_start: bool = False) -> None:
        self.calls: list[str] = []
        self.fail_start = fail_start

    def hooks(self) -> backup.Hooks:
        return backup.Hooks(stop=lambda: self.calls.append("stop"), start=self._start, owners={})

    def _start(self) -> None:
        self.calls.append("start")
        if self.fail_start and self.calls.count("start") == 1:
            raise RuntimeError("Home Assistant did not start")


def test_round_trip_restores_what_changed_and_keeps_the_device_identity(data: Path, tmp_path: Path) -> None:
    target = tmp_path / "backups"
    target.mkdir()
    info = backup.create(data, target, PASSWORD, facts={"smartos": "0.1.0"})
    assert info.name.startswith("smartos-") and info.name.endswith(".tar.gz.gpg")
    assert oct(os.stat(info.path).st_mode & 0o777) == "0o640"
    before = tree_state(data)
    (data / "homeassistant" / "configuration.yaml").write_text("broken: [\n")
    (data / "homeassistant" / "automations.yaml").write_text("- id: new\n")
    (data / "smartos" / "firewall.json").unlink()
    (data / "smartos" / "machine-id").write_text("this device\n")
    rec = Recorder()
    result = backup.restore(data, Path(info.path), PASSWORD, rec.hooks())
    after = tree_state(data)
    before.pop("homeassistant/home-assistant.log")  # logs are not part of a backup
    assert after == before
    assert rec.calls == ["stop", "start"]
    assert result["files"] == 4
    assert oct((data / "wireguard").stat().st_mode & 0o777) == "0o700"
    assert not list(data.glob(".restore*")) and not list(data.glob(".backup-*"))


def test_any_computer_opens_it_with_gpg_and_tar(data: Path, tmp_path: Path) -> None:
    info = backup.create(data, tmp_path, PASSWORD)
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    out = tmp_path / "open"
    out.mkdir()
    gpg = subprocess.run(["gpg", "--homedir", home, "--batch", "--pinentry-mode", "loopback",
                          "--passphrase", PASSWORD, "-d", info.path], capture_output=True, check=True)
    subprocess.run(["tar", "xz", "-C", out], input=gpg.stdout, check=True)
    assert (out / "MANIFEST.json").exists()
    assert (out / "homeassistant/configuration.yaml").read_text() == "default_config:\n"
    assert not (out / "smartos/machine-id").exists()
    subprocess.run(["gpgconf", "--homedir", home, "--kill", "gpg-agent"], check=False)


def test_a_database_in_use_is_backed_up_consistently(data: Path, tmp_path: Path) -> None:
    """Rows still in the write-ahead log (Home Assistant's recorder, running) are in the backup."""
    db = data / "homeassistant" / "home-assistant_v2.db"
    live = sqlite3.connect(db)
    live.execute("PRAGMA journal_mode=WAL")
    live.execute("PRAGMA wal_autocheckpoint=0")
    live.execute("CREATE TABLE states (id INTEGER PRIMARY KEY, state TEXT)")
    live.executemany("INSERT INTO states (state) VALUES (?)", [("on",)] * 500)
    live.commit()
    assert (data / "homeassistant" / "home-assistant_v2.db-wal").stat().st_size > 0
    info = backup.create(data, tmp_path, PASSWORD)
    live.close()
    db.unlink()
    backup.restore(data, Path(info.path), PASSWORD, Recorder().hooks())
    assert sqlite3.connect(db).execute("SELECT count(*) FROM states").fetchone() == (500,)


@pytest.mark.parametrize("damage", ["wrong password", "flipped byte", "truncated", "not a backup"])
def test_bad_archives_change_nothing(data: Path, tmp_path: Path, damage: str) -> None:
    info = backup.create(data, tmp_path, PASSWORD)
    path = Path(info.path)
    blob = path.read_bytes()
    password = PASSWORD
    if damage == "wrong password":
        password = "not the password"
    elif damage == "flipped byte":
        mid = len(blob) // 2
        path.write_bytes(blob[:mid] + bytes([blob[mid] ^ 0x40]) + blob[mid + 1:])
    elif damage == "truncated":
        path.write_bytes(blob[:len(blob) * 2 // 3])
    else:
        path.write_bytes(b"hello, this is not an OpenPGP file" * 100)
    before = tree_state(data)
    rec = Recorder()
    with pytest.raises(CtlError) as err:
        backup.restore(data, path, password, rec.hooks())
    assert "nothing changed" in err.value.message
    assert ("wrong password" in err.value.message) == (damage == "wrong password")
    assert tree_state(data) == before and rec.calls == []


def test_a_restore_that_fails_late_puts_the_previous_state_back(data: Path, tmp_path: Path) -> None:
    info = backup.create(data, tmp_path, PASSWORD)
    (data / "homeassistant" / "configuration.yaml").write_text("changed after the backup\n")
    before = tree_state(data)
    rec = Recorder(fail_start=True)
    with pytest.raises(RuntimeError):
        backup.restore(data, Path(info.path), PASSWORD, rec.hooks())
    assert tree_state(data) == before
    assert rec.calls == ["stop", "start", "start"]  # and Home Assistant is started on the old state


def test_not_enough_space_is_refused_before_writing(data: Path, tmp_path: Path) -> None:
    small = tmp_path / "stick"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", small], check=True)
    try:
        (data / "homeassistant" / "big.bin").write_bytes(os.urandom(3 << 20))
        with pytest.raises(CtlError, match=f"not enough space on {small}"):
            backup.create(data, small, PASSWORD)
        assert list(small.iterdir()) == []
    finally:
        subprocess.run(["umount", small], check=True)


def test_bad_input_is_named(data: Path, tmp_path: Path) -> None:
    with pytest.raises(CtlError, match="password: expected at least 8 characters"):
        backup.create(data, tmp_path, "short")
    with pytest.raises(CtlError, match="is not a directory"):
        backup.create(data, tmp_path / "missing", PASSWORD)
    with pytest.raises(CtlError, match="no backup 'nope'"):
        backup.delete(tmp_path, "nope")
