#!/usr/bin/env python3
"""Home Assistant's data snapshot around an OS update (smartos_cli/ha_data.py): time and size on
a recorder database of a realistic size.

    python3 bench/ha_snapshot.py [--entities 100] [--days 30] [--every 120] [--dir DIR]

Makes a config directory with a recorder database in the shape of Home Assistant's schema 48
(states with their metadata and shared attributes, events, 5-minute and hourly statistics, and
their indexes): `--entities` entities, each changing state every `--every` seconds on average
for `--days` days. Then times the snapshot (cp --reflink=auto for the files, SQLite's online
backup for the database) and the restore, and prints the sizes. --dir picks the filesystem
(reflink on btrfs or XFS; a plain copy on ext4, as on the device's /data).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "cli"))

from smartos_cli import ha_data  # noqa: E402

SCHEMA = """
CREATE TABLE states_meta (metadata_id INTEGER PRIMARY KEY, entity_id VARCHAR(255));
CREATE TABLE state_attributes (attributes_id INTEGER PRIMARY KEY, hash BIGINT, shared_attrs TEXT);
CREATE TABLE states (state_id INTEGER PRIMARY KEY, state VARCHAR(255), attributes_id INTEGER,
    last_changed_ts FLOAT, last_reported_ts FLOAT, last_updated_ts FLOAT, old_state_id INTEGER,
    origin_idx SMALLINT, context_id_bin BLOB, context_user_id_bin BLOB,
    context_parent_id_bin BLOB, metadata_id INTEGER);
CREATE INDEX ix_states_metadata_id_last_updated_ts ON states (metadata_id, last_updated_ts);
CREATE INDEX ix_states_last_updated_ts ON states (last_updated_ts);
CREATE INDEX ix_states_attributes_id ON states (attributes_id);
CREATE INDEX ix_states_old_state_id ON states (old_state_id);
CREATE INDEX ix_states_context_id_bin ON states (context_id_bin);
CREATE TABLE statistics_meta (id INTEGER PRIMARY KEY, statistic_id VARCHAR(255), source VARCHAR(32),
    unit_of_measurement VARCHAR(255), has_mean BOOLEAN, has_sum BOOLEAN, name VARCHAR(255));
CREATE TABLE statistics (id INTEGER PRIMARY KEY, created_ts FLOAT, metadata_id INTEGER,
    start_ts FLOAT, mean FLOAT, min FLOAT, max FLOAT, last_reset_ts FLOAT, state FLOAT, sum FLOAT);
CREATE UNIQUE INDEX ix_statistics_statistic_id_start_ts ON statistics (metadata_id, start_ts);
CREATE TABLE statistics_short_term (id INTEGER PRIMARY KEY, created_ts FLOAT, metadata_id INTEGER,
    start_ts FLOAT, mean FLOAT, min FLOAT, max FLOAT, last_reset_ts FLOAT, state FLOAT, sum FLOAT);
CREATE UNIQUE INDEX ix_statistics_short_term_statistic_id_start_ts
    ON statistics_short_term (metadata_id, start_ts);
"""


def make_config(config: Path, entities: int, days: int, every: int) -> int:
    """The config directory; returns the number of state rows."""
    (config / ".storage").mkdir(parents=True)
    (config / "configuration.yaml").write_text("default_config:\n")
    (config / ".HA_VERSION").write_text("2026.2.3")
    for name in ("core.config_entries", "core.device_registry", "core.entity_registry",
                 "core.area_registry", "auth", "lovelace"):
        (config / ".storage" / name).write_text("{" + ('"x": 1, ' * 2000) + '"end": 0}')
    rng = random.Random(8123)
    end = time.time()
    start = end - days * 86400
    db = sqlite3.connect(config / ha_data.DATABASE)
    db.executescript("PRAGMA journal_mode=WAL;" + SCHEMA)
    db.executemany("INSERT INTO states_meta VALUES (?, ?)",
                   [(i + 1, f"sensor.room_{i}_temperature") for i in range(entities)])
    db.executemany("INSERT INTO state_attributes VALUES (?, ?, ?)",
                   [(i + 1, rng.getrandbits(48),
                     '{"unit_of_measurement":"°C","device_class":"temperature","state_class":'
                     f'"measurement","friendly_name":"Room {i} temperature"}}') for i in range(entities)])
    rows = 0
    batch: list[tuple[object, ...]] = []
    for meta in range(1, entities + 1):
        t = start + rng.uniform(0, every)
        while t < end:
            rows += 1
            batch.append((f"{rng.uniform(15, 25):.1f}", meta, t, t, t, rows - 1 if rows > 1 else None,
                          0, rng.randbytes(16), meta))
            t += rng.expovariate(1 / every)
            if len(batch) >= 50000:
                db.executemany("INSERT INTO states (state, attributes_id, last_changed_ts, "
                               "last_reported_ts, last_updated_ts, old_state_id, origin_idx, "
                               "context_id_bin, metadata_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", batch)
                batch.clear()
    db.executemany("INSERT INTO states (state, attributes_id, last_changed_ts, last_reported_ts, "
                   "last_updated_ts, old_state_id, origin_idx, context_id_bin, metadata_id) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", batch)
    db.executemany("INSERT INTO statistics_meta VALUES (?, ?, 'recorder', '°C', 1, 0, NULL)",
                   [(i + 1, f"sensor.room_{i}_temperature") for i in range(entities)])
    for table, period, keep in (("statistics", 3600, days * 86400),
                                ("statistics_short_term", 300, 10 * 86400)):
        db.executemany(f"INSERT INTO {table} (created_ts, metadata_id, start_ts, mean, min, max) "  # noqa: S608
                       "VALUES (?, ?, ?, ?, ?, ?)",
                       [(s + period, m, s, 20.0, 18.0, 22.0) for m in range(1, entities + 1)
                        for s in range(int(end - keep), int(end), period)])
    db.commit()
    db.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entities", type=int, default=100)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--every", type=int, default=120, help="seconds between changes (mean)")
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        data = Path(tmp)
        config, snapshots = data / "homeassistant", data / "ha-snapshot"
        snapshots.mkdir()
        started = time.monotonic()
        rows = make_config(config, args.entities, args.days, args.every)
        made = time.monotonic() - started
        db_mib = (config / ha_data.DATABASE).stat().st_size / 2**20
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
              f"{data} on {os.statvfs(data).f_bsize}-byte blocks")
        print(f"database: {args.entities} entities x {args.days} days, a change every {args.every} s "
              f"on average: {rows} states, {db_mib:.0f} MiB (made in {made:.0f} s)")
        os.sync()
        taken = ha_data.take(config, snapshots, "bench")
        print(f"snapshot: {taken['bytes'] / 2**20:.0f} MiB in {taken['seconds']} s "
              f"(database included: {taken['database']})")
        (config / ".HA_VERSION").write_text("2026.10.4")
        started = time.monotonic()
        ha_data.put_back(config, snapshots, "bench")
        print(f"restore: {time.monotonic() - started:.2f} s (renames on one filesystem)")


if __name__ == "__main__":
    main()
