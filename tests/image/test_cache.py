"""Cache entries: pruning removes old entries of a kind and nothing else in its directory; one
build at a time holds the cache and clears what a killed build left."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from smartos_image import cache
from smartos_image.run import run

from tests.conftest import needs_root


def test_prune_keeps_the_newest_entries_and_never_touches_other_files(tmp_path: Path) -> None:
    kind = tmp_path / "hass-venv"
    kind.mkdir()
    (kind / "bin").mkdir()  # e.g. a Python venv sharing the directory
    (kind / "lib").mkdir()
    (kind / "pyvenv.cfg").write_text("")
    keys = [cache.digest("entry", n) for n in range(6)]
    for age, key in enumerate(reversed(keys)):
        (kind / key).mkdir()
        os.utime(kind / key, (1000 + age, 1000 + age))
    entry = cache.Entry(tmp_path, "hass-venv", keys[0])
    entry.prune_others(keep=4)
    assert sorted(p.name for p in kind.iterdir()) == sorted(["bin", "lib", "pyvenv.cfg", *keys[:4]])


def _mounts_below(path: Path) -> list[str]:
    with open("/proc/self/mounts") as fh:
        return [ln.split()[1] for ln in fh if ln.split()[1].startswith(str(path))]


def test_a_killed_builds_mounts_and_temporary_entries_are_cleared(tmp_path: Path) -> None:
    """What a SIGKILLed build leaves (a temporary entry with /proc still mounted in it, a mount in
    a finished entry, a work directory) is gone once the next build holds the cache; finished
    entries stay."""
    needs_root()
    stale = tmp_path / "configured" / f".{cache.digest('stale')}.tmp"
    (stale / "proc").mkdir(parents=True)
    run(["mount", "-t", "proc", "proc", stale / "proc"])
    (tmp_path / "work" / "0badc0de").mkdir(parents=True)
    kept = tmp_path / "configured" / cache.digest("kept")
    (kept / "proc").mkdir(parents=True)
    run(["mount", "-t", "proc", "proc", kept / "proc"])  # a finished entry a killed build used
    (tmp_path / "pypi-homeassistant.json").write_text("{}")
    try:
        with cache.exclusive(tmp_path, lambda holder: None):
            assert _mounts_below(tmp_path) == []
            assert not stale.exists()
            assert list((tmp_path / "work").iterdir()) == []
            assert kept.is_dir() and (tmp_path / "pypi-homeassistant.json").exists()
    finally:
        for point in reversed(_mounts_below(tmp_path)):
            run(["umount", "--lazy", point])


def test_a_second_build_waits_for_the_first_and_names_it(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, pathlib\n"
         "from smartos_image import cache\n"
         "with cache.exclusive(pathlib.Path(sys.argv[1]), print):\n"
         "    print('held', flush=True); sys.stdin.readline()", str(tmp_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdin is not None
    assert holder.stdout.readline() == "held\n"
    waited: list[str] = []
    entered = threading.Event()

    def second() -> None:
        with cache.exclusive(tmp_path, waited.append):
            entered.set()

    thread = threading.Thread(target=second)
    thread.start()
    assert not entered.wait(1.0), "the second build ran while the first held the cache"
    assert waited == [str(holder.pid)]
    holder.stdin.write("\n")
    holder.stdin.flush()
    holder.wait(timeout=10)
    assert entered.wait(10)
    thread.join()
