"""Home Assistant's data across an OS update: a snapshot before the first start of a new slot,
put back if that slot rolls back.

A new slot may carry a newer Home Assistant, which migrates its storage files (`.storage/`) and
the recorder database on its first start; the release before it cannot read what it wrote. So
smartos-ha-data.service (before smartos.service, every boot) does one of:

- on a trial boot (the booted slot is the pending update's, update-state.json), the first time
  only: copy /data/homeassistant into /data/ha-snapshot/<transaction>: files with `cp -a
  --reflink=auto` (copy-on-write where the filesystem has it), the recorder database with
  SQLite's online backup, and only when /data keeps HEADROOM free after it (otherwise the
  snapshot holds everything but the database, and says so);
- on the first boot back on the old slot after a failed trial: move what the trial left in
  /data/homeassistant aside into /data/ha-snapshot/trial-<transaction> and put the snapshot in
  its place, before the old Home Assistant starts. History recorded during the failed trial is
  not merged back (it is in the newer release's schema); it stays in the trial tree until the
  next update, for the owner to take;
- on every other boot, and after the health gate confirms a slot: remove snapshots of updates
  that are over.

Root decides, from the update record that only root writes; the copying runs as Home
Assistant's own user, since the tree is Home Assistant's (docs/security.md: root never walks a
tree another user can write). `main` runs this module again under `setpriv` as `homeassistant`
and reads back the one JSON line it prints; what happened goes into the pending update's record
(`ha_data`), which `smartosctl update status` shows.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import update
from .errors import CtlError
from .paths import Paths
from .run import run

USER = "homeassistant"
DATABASE = "home-assistant_v2.db"
# Left out of a snapshot and left where they are by a restore: Home Assistant's own backups
# (large, and made to survive any version), its log, the text-to-speech cache.
KEEP_IN_PLACE = {"backups", "tts", "home-assistant.log", "home-assistant.log.1",
                 "home-assistant.log.old", "home-assistant.log.fault"}
HEADROOM = 256 << 20  # /data keeps this much free after a snapshot (the journal, RAUC's indexes)


def _in_scope(name: str) -> bool:
    return name not in KEEP_IN_PLACE


def _size(path: Path) -> int:
    if path.is_symlink() or not path.is_dir():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*"))


# -- what runs as Home Assistant's user ----------------------------------------------------------

def take(config: Path, snapshots: Path, transaction: str, *,
         free: Callable[[Path], int] = lambda p: shutil.disk_usage(p).free) -> dict[str, Any]:
    """Snapshot config into snapshots/<transaction>; earlier snapshots and trial trees go."""
    started = time.monotonic()
    for old in snapshots.iterdir():
        _remove(old)
    entries = sorted(p for p in config.iterdir() if _in_scope(p.name))
    database = config / DATABASE
    files = [p for p in entries if not p.name.startswith(DATABASE)]
    files_bytes = sum(_size(p) for p in files)
    db_bytes = sum(_size(p) for p in entries if p.name.startswith(DATABASE))
    room = free(snapshots) - HEADROOM
    if files_bytes > room:
        return {"action": "snapshot", "taken": False,
                "reason": f"no room on /data for a snapshot ({files_bytes >> 20} MiB needed, "
                          f"{max(room, 0) >> 20} MiB to spare)"}
    with_db = database.is_file() and files_bytes + db_bytes <= room
    partial = snapshots / f".{transaction}.partial"
    target = partial / "config"
    target.mkdir(parents=True)
    if files:
        run(["cp", "-a", "--reflink=auto", "--", *files, target])
    if with_db:
        _backup_database(database, target / DATABASE)
    meta = {"transaction": transaction, "database": with_db, "taken_at": update.now()}
    (partial / "meta.json").write_text(json.dumps(meta) + "\n")
    os.sync()
    partial.rename(snapshots / transaction)
    result: dict[str, Any] = {"action": "snapshot", "taken": True, "database": with_db,
                              "bytes": _size(snapshots / transaction),
                              "seconds": round(time.monotonic() - started, 1)}
    if database.is_file() and not with_db:
        result["reason"] = (f"the recorder database ({db_bytes >> 20} MiB) left out: no room on "
                            "/data; a rollback starts a new one")
    return result


def _backup_database(source: Path, target: Path) -> None:
    """SQLite's online backup: a consistent copy even of a database in WAL mode with a writer."""
    src = sqlite3.connect(source)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst, pages=4096)
        finally:
            dst.close()
    finally:
        src.close()


def put_back(config: Path, snapshots: Path, transaction: str) -> dict[str, Any]:
    """Move the trial's data aside and the snapshot into config. Safe to run again after a power
    cut: the first step moves only what is still in config, and a marker file separates it from
    the second, which moves only what is still in the snapshot."""
    snapshot = snapshots / transaction
    trial = snapshots / f"trial-{transaction}"
    if not (snapshot / "meta.json").is_file():
        raise CtlError(f"no complete snapshot for update {transaction} in {snapshots}")
    meta = json.loads((snapshot / "meta.json").read_text())
    aside = snapshot / "trial-moved-aside"
    if not aside.exists():
        trial.mkdir(exist_ok=True)
        for entry in sorted(config.iterdir()):
            if _in_scope(entry.name):  # the database too: the trial may have migrated it
                entry.rename(trial / entry.name)
        os.sync()
        aside.touch()
    for entry in sorted((snapshot / "config").iterdir()):
        entry.rename(config / entry.name)
    os.sync()
    _remove(snapshot)
    return {"action": "restore", "restored": True, "database": meta["database"],
            "snapshot_taken_at": meta["taken_at"], "trial_data": str(trial)}


def clean(snapshots: Path, keep: str = "") -> dict[str, Any]:
    """Remove snapshots except the one for the pending update (keep); trial trees stay."""
    removed = [p.name for p in snapshots.iterdir()
               if not p.name.startswith("trial-") and p.name != keep]
    for name in removed:
        _remove(snapshots / name)
    return {"action": "clean", "removed": removed}


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


# -- what root decides -------------------------------------------------------------------------

def plan(state: update.State, booted: str) -> tuple[str, str]:
    """(action, transaction) for this boot: snapshot, restore, clean or nothing ("")."""
    pending = state.pending
    if not pending or pending.get("state") != "installed" or "transaction" not in pending:
        return "clean", ""
    done = pending.get("ha_data") or {}
    if pending.get("slot") == booted:
        return ("", "") if "snapshot" in done else ("snapshot", pending["transaction"])
    if (done.get("snapshot") or {}).get("taken") and "restore" not in done:
        return "restore", pending["transaction"]  # the trial failed: the old slot booted
    return "", ""


def as_user(paths: Paths, action: str, transaction: str) -> dict[str, Any]:
    """This module's child mode, as Home Assistant's user; the JSON line it printed."""
    out = run(["setpriv", f"--reuid={USER}", f"--regid={USER}", "--clear-groups",
               "--inh-caps=-all", "--", sys.executable, "-I", "-m", "smartos_cli.ha_data",
               "--as-user", action, str(paths.data), transaction], timeout=3600).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def boot(paths: Paths, booted: str,
         child: Callable[[Paths, str, str], dict[str, Any]] = as_user) -> str:
    """Root's part, once per boot: decide, let the child act, record it with the pending update."""
    state = update.load_state(paths)
    action, transaction = plan(state, booted)
    if not action:
        return ""
    try:
        result = child(paths, action, transaction)
    except CtlError as exc:
        result = {"action": action, "error": exc.message}
    if state.pending is not None and action != "clean":
        state.pending.setdefault("ha_data", {})[action] = {**result, "at": update.now()}
        update.save_state(paths, state)
    return describe(result)


def main() -> None:
    if sys.argv[1:2] == ["--as-user"]:  # the child, as Home Assistant's user
        action, data, transaction = sys.argv[2:5]
        config, snapshots = Path(data) / "homeassistant", Path(data) / "ha-snapshot"
        if action == "snapshot":
            result = take(config, snapshots, transaction)
        elif action == "restore":
            result = put_back(config, snapshots, transaction)
        else:
            result = clean(snapshots, keep=transaction)
        print(json.dumps(result), flush=True)
        return
    try:
        print(boot(Paths(), update.booted_slot()), flush=True)
    except CtlError as exc:
        print(exc.message, file=sys.stderr)
        sys.exit(1)


def describe(result: dict[str, Any]) -> str:
    """One line for the journal and `smartosctl update status`."""
    if result.get("error"):
        return f"Home Assistant's data: {result['action']} failed: {result['error']}"
    if result["action"] == "snapshot":
        if not result.get("taken"):
            return f"Home Assistant's data: no snapshot ({result['reason']})"
        what = "with" if result["database"] else "without"
        return (f"Home Assistant's data: snapshot {what} the recorder database, "
                f"{result['bytes'] >> 20} MiB in {result['seconds']} s")
    if result["action"] == "restore":
        return (f"Home Assistant's data: put back as it was before the update (snapshot of "
                f"{result['snapshot_taken_at']}); what the failed trial wrote is in "
                f"{result['trial_data']}")
    return f"Home Assistant's data: {len(result['removed'])} old snapshot(s) removed"


if __name__ == "__main__":
    main()
