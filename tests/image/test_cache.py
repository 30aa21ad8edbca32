"""Cache entries: pruning removes old entries of a kind and nothing else in its directory."""

from __future__ import annotations

import os
from pathlib import Path

from smartos_image import cache


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
