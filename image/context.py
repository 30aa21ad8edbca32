"""What a build carries from stage to stage: settings, paths, and the log."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from .config import Config
from .hass import Requirements
from .keys import Keys
from .runtime import Choice

log = logging.getLogger("smartos")

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Context:
    config: Config
    workdir: Path  # scratch space for this build, removed at the end
    logfile: Path
    console: Console
    repo: Path = REPO
    debug: bool = False
    keys: Keys | None = None  # a release: sign the update bundle with these
    fast_bundle: bool = False  # a release: quicker compression, bigger bundle
    # filled in by stages as they go
    python_version: str = ""  # the suite's python3 (smartosctl, the agent, Ansible)
    ha_python: Choice | None = None  # what Home Assistant runs on (image/runtime.py)
    homeassistant: Requirements | None = None  # the release being installed (image/venv.py)
    facts: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def rootfs(self) -> Path:
        return self.workdir / "rootfs"

    @property
    def cache(self) -> Path:
        return self.config.cache_dir

    @property
    def out(self) -> Path:
        return self.config.output_dir

    @property
    def image_name(self) -> str:
        return f"smartos-{self.config.version}-{self.config.board.value}"

    @contextmanager
    def stage(self, title: str) -> Iterator[None]:
        """Print a stage's start and end with its elapsed time; the log gets a header too."""
        start = time.monotonic()
        self.console.print(f"[bold cyan]▶[/] {title}")
        with self.logfile.open("a") as fh:
            fh.write(f"\n===== {title} =====\n")
        yield
        elapsed = time.monotonic() - start
        self.timings[title] = round(elapsed, 1)
        self.console.print(f"  [green]✓[/] {title} [dim]({elapsed:.1f} s)[/]")

    def note(self, message: str) -> None:
        self.console.print(f"  [dim]{message}[/]")
        with self.logfile.open("a") as fh:
            fh.write(message + "\n")
