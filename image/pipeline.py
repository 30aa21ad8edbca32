"""A build, start to end: the stage list below is the whole order of a build."""

from __future__ import annotations

import logging
import shutil
import signal
import time
import uuid
from collections.abc import Callable
from types import FrameType

from rich.console import Console

from . import cache, stages, venv
from .chroot import umount_below
from .config import Config
from .context import Context
from .keys import Keys

log = logging.getLogger("smartos")

Stage = Callable[[Context], None]

STAGES: list[Stage] = [
    stages.check_host,           # tools present (installed with apt-get when missing)
    stages.bootstrap,            # mmdebstrap: Debian + every package roles and board need
    venv.resolve_homeassistant,  # the release, its Python, requirements and USB matchers
    stages.apply_roles,          # Ansible roles through a chroot connection
    stages.install_overlays,     # static trees and systemd units
    venv.install_homeassistant,  # Home Assistant venv (and its Python), ready to run offline
    stages.prepare_data,         # the data partition's first contents
    stages.finalize_rootfs,      # per-device state out, build facts in
    stages.make_bootloader,      # GRUB + A/B slot state on the ESP
    stages.assemble_disk,        # GPT + filesystems, no loop devices
    stages.make_bundle,          # releases only: root slot A as a signed RAUC bundle
    stages.publish,              # .img.xz + .bmap + SHA256SUMS + manifest, renamed into place
]


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def build(config: Config, console: Console, debug: bool = False, keys: Keys | None = None,
          fast_bundle: bool = False) -> Context:
    """Run every stage; on any failure or Ctrl-C leave no mounts and no half-written outputs.
    With keys, also make the update bundle (a release) signed with them."""
    config.output_dir.mkdir(parents=True, exist_ok=True)

    def waiting(holder: str) -> None:
        console.print(f"waiting for another build using {config.cache_dir} (pid {holder}) ...")

    with cache.exclusive(config.cache_dir, waiting):
        return _build(config, console, debug, keys, fast_bundle)


def _build(config: Config, console: Console, debug: bool, keys: Keys | None,
           fast_bundle: bool) -> Context:
    work = config.cache_dir / "work" / uuid.uuid4().hex[:8]
    work.mkdir(parents=True)
    logfile = config.output_dir / "build.log"
    logfile.write_text("")
    ctx = Context(config=config, workdir=work, logfile=logfile, console=console, debug=debug, keys=keys,
                  fast_bundle=fast_bundle)
    ctx.facts["build_id"] = uuid.uuid4().hex
    ctx.facts["layout"] = stages.new_layout(ctx)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    start = time.monotonic()
    try:
        for stage in STAGES:
            stage(ctx)
    finally:
        signal.signal(signal.SIGTERM, previous)
        umount_below(work)
        for leftover in config.output_dir.glob(".*.tmp"):
            leftover.unlink()
        shutil.rmtree(work, ignore_errors=True)
    ctx.timings["total"] = round(time.monotonic() - start, 1)
    return ctx
