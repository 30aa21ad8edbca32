"""Home Assistant's data across an update (smartos_cli/ha_data.py): real files, GNU cp and
SQLite in a temporary /data. Running the child as another user (setpriv) needs the device's
`homeassistant` user: tests/system/test_update.py runs that part on the booted image."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from smartos_cli import ha_data, update
from smartos_cli.paths import Paths

TXN = "0b6f3c1e-update"


def home(data: Path) -> tuple[Path, Path]:
    """A small Home Assistant config: storage, a link, its own backups, a WAL database with rows
    that only the write-ahead log holds yet (a writer still has it open)."""
    config, snapshots = data / "homeassistant", data / "ha-snapshot"
    (config / ".storage").mkdir(parents=True)
    snapshots.mkdir()
    (config / "configuration.yaml").write_text("default_config:\n")
    (config / ".HA_VERSION").write_text("2026.2.3")
    (config / ".storage/core.config_entries").write_text('{"version": 1}')
    (config / "custom_components").symlink_to("/nonexistent/elsewhere")
    (config / "backups").mkdir()
    (config / "backups/big.tar").write_bytes(b"x" * 4096)
    return config, snapshots


def open_writer(config: Path, rows: int = 500) -> sqlite3.Connection:
    db = sqlite3.connect(config / ha_data.DATABASE)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA wal_autocheckpoint=0")
    db.execute("CREATE TABLE states (entity_id TEXT, state TEXT, last_updated REAL)")
    db.executemany("INSERT INTO states VALUES (?, ?, ?)",
                   [(f"sensor.s{i % 100}", str(i), float(i)) for i in range(rows)])
    db.commit()
    return db


def count(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM states").fetchone()[0])


def test_a_snapshot_copies_config_links_and_a_consistent_database_but_not_ha_s_backups(
        tmp_path: Path) -> None:
    config, snapshots = home(tmp_path)
    writer = open_writer(config)
    assert (config / f"{ha_data.DATABASE}-wal").stat().st_size > 0  # the rows are in the WAL
    result = ha_data.take(config, snapshots, TXN)
    writer.close()
    assert result["taken"] and result["database"] and "reason" not in result
    copy = snapshots / TXN / "config"
    assert (copy / ".storage/core.config_entries").read_text() == '{"version": 1}'
    assert (copy / "custom_components").is_symlink()  # copied as a link, never followed
    assert not (copy / "backups").exists()
    assert count(copy / ha_data.DATABASE) == 500
    assert json.loads((snapshots / TXN / "meta.json").read_text())["database"] is True
    assert not list(snapshots.glob(".*partial"))


def test_the_database_is_left_out_when_data_has_no_room_for_it_and_nothing_without_room_at_all(
        tmp_path: Path) -> None:
    config, snapshots = home(tmp_path)
    open_writer(config, rows=20000).close()
    db = (config / ha_data.DATABASE).stat().st_size
    result = ha_data.take(config, snapshots, TXN, free=lambda p: ha_data.HEADROOM + db // 2)
    assert result["taken"] and not result["database"]
    assert "database" in result["reason"] and "rollback starts a new one" in result["reason"]
    assert not (snapshots / TXN / "config" / ha_data.DATABASE).exists()
    result = ha_data.take(config, snapshots, "other", free=lambda p: ha_data.HEADROOM)
    assert not result["taken"] and "no room on /data" in result["reason"]
    assert list(snapshots.iterdir()) == []  # the earlier snapshot went with the new attempt


def trial_migrates(config: Path) -> None:
    """What a newer Home Assistant does on its first start."""
    (config / ".HA_VERSION").write_text("2026.10.4")
    (config / ".storage/core.config_entries").write_text('{"version": 2}')
    (config / ".storage/new_store").write_text("{}")
    with sqlite3.connect(config / ha_data.DATABASE) as db:
        db.execute("ALTER TABLE states ADD COLUMN migrated INTEGER")
    (config / "backups/during-trial.tar").write_bytes(b"y")


def test_a_rollback_puts_the_snapshot_back_and_keeps_the_trial_aside(tmp_path: Path) -> None:
    config, snapshots = home(tmp_path)
    open_writer(config).close()
    ha_data.take(config, snapshots, TXN)
    trial_migrates(config)
    result = ha_data.put_back(config, snapshots, TXN)
    assert result["restored"] and result["database"]
    assert (config / ".HA_VERSION").read_text() == "2026.2.3"
    assert (config / ".storage/core.config_entries").read_text() == '{"version": 1}'
    assert not (config / ".storage/new_store").exists()
    with sqlite3.connect(config / ha_data.DATABASE) as db:
        assert "migrated" not in [c[1] for c in db.execute("PRAGMA table_info(states)")]
    assert sorted(p.name for p in (config / "backups").iterdir()) == ["big.tar", "during-trial.tar"]
    trial = Path(result["trial_data"])
    assert (trial / ".HA_VERSION").read_text() == "2026.10.4"  # the owner can still take it
    assert not (snapshots / TXN).exists()
    assert ha_data.clean(snapshots)["removed"] == [] and trial.is_dir()


def test_a_restore_cut_short_by_a_power_cut_finishes_when_run_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config, snapshots = home(tmp_path)
    open_writer(config).close()
    ha_data.take(config, snapshots, TXN)
    trial_migrates(config)
    real_rename, moves = Path.rename, []

    def cut_after_seven(self: Path, target: Any) -> Path:
        if len(moves) == 7:
            raise OSError("power cut")
        moves.append(self)
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", cut_after_seven)
    with pytest.raises(OSError):
        ha_data.put_back(config, snapshots, TXN)
    monkeypatch.setattr(Path, "rename", real_rename)
    ha_data.put_back(config, snapshots, TXN)
    assert (config / ".HA_VERSION").read_text() == "2026.2.3"
    assert (config / ".storage/core.config_entries").read_text() == '{"version": 1}'
    assert count(config / ha_data.DATABASE) == 500
    assert (snapshots / f"trial-{TXN}" / ".storage/new_store").exists()


def state_with(pending: dict[str, Any] | None) -> update.State:
    return update.State(pending=pending)


INSTALLED = {"version": "2.0.0", "slot": "B", "from_slot": "A", "state": "installed",
             "transaction": TXN, "attempts": []}


@pytest.mark.parametrize(("pending", "booted", "wanted"), [
    (None, "A", ("clean", "")),
    ({**INSTALLED, "state": "installing"}, "A", ("clean", "")),
    (INSTALLED, "B", ("snapshot", TXN)),  # the trial's first boot
    ({**INSTALLED, "ha_data": {"snapshot": {"taken": True}}}, "B", ("", "")),  # its second try
    ({**INSTALLED, "ha_data": {"snapshot": {"taken": True}}}, "A", ("restore", TXN)),  # fell back
    ({**INSTALLED, "ha_data": {"snapshot": {"taken": False}}}, "A", ("", "")),  # nothing to put back
    ({**INSTALLED, "ha_data": {"snapshot": {"taken": True}, "restore": {}}}, "A", ("", "")),
    (INSTALLED, "A", ("", "")),  # installed, not booted yet
])
def test_root_decides_from_its_own_update_record(pending: dict[str, Any] | None, booted: str,
                                                  wanted: tuple[str, str]) -> None:
    assert ha_data.plan(state_with(pending), booted) == wanted


def test_each_boot_records_what_was_done_with_the_pending_update(tmp_path: Path) -> None:
    """Root's part with the child run in this process (the device runs it through setpriv)."""
    paths = Paths(data=tmp_path)
    config, snapshots = home(tmp_path)
    open_writer(config).close()

    def child(p: Paths, action: str, transaction: str) -> dict[str, Any]:
        return {"snapshot": lambda: ha_data.take(config, snapshots, transaction),
                "restore": lambda: ha_data.put_back(config, snapshots, transaction),
                "clean": lambda: ha_data.clean(snapshots, keep=transaction)}[action]()

    update.save_state(paths, state_with(dict(INSTALLED)))
    assert "snapshot with the recorder database" in ha_data.boot(paths, "B", child)
    assert ha_data.boot(paths, "B", child) == ""  # a second try of the trial keeps the first snapshot
    trial_migrates(config)
    line = ha_data.boot(paths, "A", child)
    assert "put back as it was before the update" in line and f"trial-{TXN}" in line
    done = update.load_state(paths).pending["ha_data"]  # type: ignore[index]
    assert done["snapshot"]["taken"] and done["restore"]["restored"]
    assert (config / ".HA_VERSION").read_text() == "2026.2.3"
    update.finish(paths, update.load_state(paths), "rolled back")
    assert update.load_state(paths).history[-1]["ha_data"]["restore"]["restored"]
    assert "0 old snapshot(s) removed" in ha_data.boot(paths, "A", child)
