"""The update tests' releases of the test image: built with `smartos release` in the background
while the VM's other tests run, published into the served channel tree when a test asks.

A release build (an image from the cached roles plus a signed bundle) takes a minute or two of
the host's CPU; the VM's ssh tests leave about one of its two cores idle, so the builds start as
soon as the VM boots (after the Raspberry Pi images, in the same one-at-a-time pool) and are
ready long before the update flow needs them. `smartos release` publishes each into a staging
tree of its own; `publish` then lists it in the served channel with the same signed entry
(release.publish), so each test still sees the channel change only when it asks.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from pathlib import Path
from typing import Any

from smartos_image import keys, release
from smartos_image.config import Board, Channel

REPO = Path(__file__).resolve().parents[2]


MIGRATED = "2099.1.0"
MIGRATE = (f"echo {MIGRATED} > /data/homeassistant/.HA_VERSION && "
           "echo trial > /data/homeassistant/smartos-trial.txt")


def broken_home_assistant(where: Path) -> Path:
    """A tree for extra_trees whose smartos.service cannot start Home Assistant: it does what a
    newer release's first start does to the configuration (migrates .HA_VERSION, adds a file),
    then fails, so the rollback must put the data back (smartos_cli/ha_data.py). The unit itself
    is changed in place: a new file (a drop-in) would shift the inode numbers of every file laid
    out after it in the root ext4, and the device would download ~100 MiB of changed metadata
    instead of a few blocks (docs/benchmarks.md)."""
    unit = where / "usr/lib/systemd/system/smartos.service"
    unit.parent.mkdir(parents=True, exist_ok=True)
    shipped = (REPO / "systemd/smartos.service").read_text()
    assert "\nExecStart=/opt/smartos/venv/bin/hass " in shipped
    unit.write_text(re.sub(r"^ExecStart=.*$", f"ExecStart=/bin/sh -c '{MIGRATE}; exit 1'", shipped,
                           flags=re.MULTILINE))
    return where


# version -> a function of a scratch directory that returns the release's extra trees
RELEASES: dict[str, Callable[[Path], list[Path]]] = {
    "0.2.0": lambda scratch: [],
    "0.3.0": lambda scratch: [broken_home_assistant(scratch / "broken")],
}


class Releases:
    """`smartos release` of the test image at the versions in RELEASES, once each per session."""

    def __init__(self, board: str, settings: list[str], signing: Path, work: Path,
                 submit: Callable[[Callable[[], Path]], Future[Path]],
                 smartos: Callable[..., Any]) -> None:
        self.board, self.settings, self.signing, self.work = board, settings, signing, work
        self.submit, self.smartos = submit, smartos
        self.staged: dict[str, Future[Path]] = {}

    def _build(self, version: str) -> Path:
        """The release staged in a channel tree of its own; returns that tree."""
        scratch = self.work / version
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        trees = RELEASES[version](scratch)
        extra = ["--set", f"extra_trees=[{','.join(map(str, trees))}]"] if trees else []
        result = self.smartos("--board", self.board, *self.settings, "--set", f"version={version}",
                              "--set", f"output_dir={scratch / 'out'}", *extra,
                              "release", "--channel", Channel.STABLE.value, "--to", str(scratch / "tree"),
                              "--keys", str(self.signing), "--notes", f"test release {version}", "--fast")
        assert result.returncode == 0, result.stdout + result.stderr
        shutil.rmtree(scratch / "out")  # the raw image: the tree has the bundle
        return scratch / "tree"

    def prefetch(self) -> None:
        for version in RELEASES:
            if version not in self.staged:
                self.staged[version] = self.submit(partial(self._build, version))

    def publish(self, version: str, channel: str, tree: Path) -> dict[str, Any]:
        """Wait for the release's build (or start it), then publish its bundle into channel of
        tree with its signed entry; returns that entry as the served index lists it."""
        if version not in self.staged:
            self.staged[version] = Future()
            self.staged[version].set_result(self._build(version))
        staged = self.staged[version].result()
        board = Board(self.board)
        index = release.read_index(release.index_path(staged, Channel.STABLE, board))
        assert index is not None
        entry = next(r for r in index.releases if r.version == version)
        served = release.publish(
            release.index_path(staged, Channel.STABLE, board).parent / entry.file, tree,
            channel=Channel(channel), board=board, version=version, min_version=entry.min_version,
            notes=entry.notes, homeassistant=entry.homeassistant, build_id=entry.build_id,
            m_hash=entry.manifest_hash, keys=keys.Keys(self.signing))
        listed = json.loads(served.read_text())
        return dict(next(r for r in listed["releases"] if r["version"] == version))
