"""`smartos` (and `./build.py`): build, check and try SmartOS images.

Thin verbs: each parses options, calls the library, and renders the result. Errors from the
library arrive as SmartOSError and leave as one message and exit code 2 (tracebacks with --debug).
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table
from smartos_cli.channel_index import VALIDITY_DAYS

from . import runtime, venv
from .boards import board_module
from .config import Board, Channel, Config, load_config
from .errors import SmartOSError

F = TypeVar("F", bound=Callable[..., Any])
console = Console(stderr=True, highlight=False, soft_wrap=True)
PYTHON_OF_SUITE = {"trixie": "3.13.5", "forky": "3.14.8"}  # for `check`, before any bootstrap


def _errors_to_exit(fn: F) -> F:
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        try:
            return fn(*args, **kwargs)
        except SmartOSError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            console.print(f"[bold red]error:[/] {escape(exc.message)}")
            if exc.hint:
                console.print(f"[yellow]hint:[/] {escape(exc.hint)}")
            sys.exit(2)
        except KeyboardInterrupt:
            console.print("[bold red]interrupted[/]: nothing was left mounted or half-written")
            sys.exit(130)
        except Exception as exc:  # a bug, not bad input: say so briefly, details with --debug
            if ctx.obj and ctx.obj.get("debug"):
                raise
            console.print(f"[bold red]internal error:[/] {escape(type(exc).__name__)}: {escape(str(exc))}")
            console.print("[yellow]hint:[/] run again with --debug for the traceback, and report it")
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


def _config(obj: dict[str, Any]) -> Config:
    return load_config(obj["config"], tuple(obj["set"]), board=obj["board"])


def settings_options(fn: F) -> F:
    """--config/--board/--set, accepted before the verb (`smartos --board x check`) and after it
    (`smartos check --board x`); after wins."""

    @click.option("--config", "-c", "config_file", type=click.Path(path_type=Path),
                  help="YAML file with build settings (see image/data/defaults.yaml).")
    @click.option("--board", "-b", type=click.Choice([b.value for b in Board]), help="Board to build for.")
    @click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                  help="Override one setting, e.g. --set hostname=kitchen (repeatable).")
    @wraps(fn)
    def wrapper(*args: Any, config_file: Path | None = None, board: str | None = None,
                overrides: tuple[str, ...] = (), **kwargs: Any) -> Any:
        obj = click.get_current_context().obj
        if config_file is not None:
            obj["config"] = config_file
        if board is not None:
            obj["board"] = board
        obj["set"] = [*obj["set"], *overrides]
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "-c", "config_file", type=click.Path(path_type=Path),
              help="YAML file with build settings (see image/data/defaults.yaml).")
@click.option("--board", "-b", type=click.Choice([b.value for b in Board]), help="Board to build for.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override one setting, e.g. --set hostname=kitchen (repeatable).")
@click.option("--debug", is_flag=True, help="Log every command and show tracebacks.")
@click.pass_context
def main(ctx: click.Context, config_file: Path | None, board: str | None,
         overrides: tuple[str, ...], debug: bool) -> None:
    """Build SmartOS images. With no command: build the image (needs root)."""
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(message)s",
                        handlers=[RichHandler(console=console, show_time=False, show_path=False)])
    ctx.obj = {"config": config_file, "board": board, "set": list(overrides), "debug": debug}
    if ctx.invoked_subcommand is None:
        ctx.invoke(build)  # `./build.py` alone builds


@main.command()
@settings_options
@click.pass_obj
@_errors_to_exit
def build(obj: dict[str, Any]) -> None:
    """Build the image into output_dir (default ./out)."""
    from .pipeline import build as run_build

    cfg = _config(obj)
    if not cfg.authorized_keys():
        console.print("[bold yellow]WARNING: no ssh key given: nobody will be able to log in to "
                      "this image over ssh.[/]\n  Add one with --set admin.ssh_key_files="
                      "[~/.ssh/id_ed25519.pub] or admin.ssh_key_files in your --config file.")
    if cfg.update_keyring() is None:
        console.print("[bold yellow]WARNING: no update keyring: this image will refuse every update "
                      "bundle.[/]\n  Make signing keys once with `smartos keys init` (or set "
                      "update.keyring).")
    ctx = run_build(cfg, console, debug=obj["debug"])
    console.print(f"[bold green]done[/] in {ctx.timings['total']:.0f} s: "
                  + ", ".join(p.name for p in ctx.facts["outputs"]))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the settings as JSON.")
@click.option("--offline", is_flag=True, help="Do not ask PyPI which Home Assistant release fits.")
@settings_options
@click.pass_obj
@_errors_to_exit
def check(obj: dict[str, Any], as_json: bool, offline: bool) -> None:
    """Validate the settings and print them resolved, without building (no root needed)."""
    cfg = _config(obj)
    settings = cfg.as_dict()
    python = PYTHON_OF_SUITE[cfg.debian.suite.value]
    settings["resolved"] = {"python": python, "authorized_keys": len(cfg.authorized_keys())}
    if not offline:
        release, choice = runtime.select(
            cfg.cache_dir, cfg.debian.suite.value, python, cfg.homeassistant.version,
            installable=venv.installable(cfg.cache_dir, board_module(cfg.board).ARCH))
        settings["resolved"] |= {"homeassistant": release.version, "python": choice.python,
                                 "python_why": choice.reason}
        if choice.skipped:
            settings["resolved"]["homeassistant_passed_over"] = list(choice.skipped)
    if as_json:
        click.echo(json.dumps(settings, indent=2))
        return
    table = Table(show_header=False, box=None)
    for key, value in _flatten(settings):
        table.add_row(key, str(value))
    Console().print(table)


@main.command("pin-runtime")
@click.argument("minor", metavar="X.Y")
@click.option("--suite", required=True, help="The Debian suite that carries Python X.Y (forky).")
@settings_options
@click.pass_obj
@_errors_to_exit
def pin_runtime(obj: dict[str, Any], minor: str, suite: str) -> None:
    """Pin Python X.Y from a newer Debian suite as the runtime for Home Assistant releases that
    need it: reads the suite's signed index from debian.mirror into image/data/python-runtimes.toml."""
    cfg = _config(obj)
    pinned = runtime.pin(minor, suite, cfg.debian.mirror)
    runtime.write_pin(pinned, cfg.debian.mirror)
    table = Table("package", "arch", "version", "size", "for", box=None)
    for deb in pinned.debs:
        table.add_row(deb.package, deb.arch, deb.version, f"{deb.size / 2**20:.1f} MiB", deb.role)
    Console().print(table)
    console.print(f"pinned Python {pinned.python} from Debian {suite} (index of {pinned.index_date}) "
                  f"in {runtime.PINS}")


def _flatten(tree: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in tree.items():
        if isinstance(value, dict):
            rows += _flatten(value, f"{prefix}{key}.")
        else:
            rows.append((f"{prefix}{key}", value))
    return rows


@main.command()
@click.argument("image", required=False, type=click.Path(path_type=Path, exists=True))
@click.option("--ssh-port", default=2222, show_default=True)
@click.option("--http-port", default=8123, show_default=True)
@click.option("--internet/--no-internet", default=False, show_default=True,
              help="Let the guest reach the internet (it never accepts connections from outside).")
@settings_options
@click.pass_obj
@_errors_to_exit
def vm(obj: dict[str, Any], image: Path | None, ssh_port: int, http_port: int, internet: bool) -> None:
    """Boot an image in QEMU: ssh on 127.0.0.1:2222, Home Assistant on 127.0.0.1:8123."""
    import tempfile

    from .vm import Machine, find_image

    cfg = _config(obj)
    image = image or find_image(cfg.output_dir, board=obj.get("board"))
    cfg.cache_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="smartos-vm-", dir=cfg.cache_dir))
    console.print(f"booting {image.name}: ssh -p {ssh_port} {cfg.admin.user}@127.0.0.1, "
                  f"http://127.0.0.1:{http_port}  (Ctrl-A X quits)")
    machine = Machine(image, workdir, ssh_port, http_port, restrict=not internet)
    try:
        code = machine.interactive()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)  # the VM's copy-on-write disk
    sys.exit(code)


@main.group()
def keys() -> None:
    """Update signing keys (kept outside the repository)."""


@keys.command("init")
@click.option("--dir", "directory", type=click.Path(path_type=Path), default=None,
              help="Where the keys go (default: ~/.config/smartos/keys).")
@click.option("--organization", default="SmartOS", show_default=True,
              help="The name in the certificates.")
@click.option("--renew-signing", is_flag=True,
              help="Keep the CA; issue a new signing key from it (devices need nothing new).")
@click.pass_obj
@_errors_to_exit
def keys_init(obj: dict[str, Any], directory: Path | None, organization: str, renew_signing: bool) -> None:
    """Make the update CA and a signing key. The CA certificate goes into every image built after
    this; keep ca.key.pem offline and backed up: without it no new signing key can be issued."""
    from . import keys as keys_lib

    made = keys_lib.init(directory or keys_lib.default_dir(), organization, renew_signing)
    for name, text in keys_lib.describe(made).items():
        console.print(f"[bold]{name}[/]: {escape(text)}")
    console.print(f"[bold green]done[/]: {made.directory}  (images now trust {made.ca_cert.name})")


valid_days_option = click.option(
    "--valid-days", type=click.IntRange(min=1), default=VALIDITY_DAYS, show_default=True,
    help="How long devices accept the signed channel index.")


@main.command()
@click.option("--channel", type=click.Choice([c.value for c in Channel]), required=True,
              help="The channel to publish into.")
@click.option("--to", "tree", type=click.Path(path_type=Path), default=Path("releases"),
              show_default=True, help="The channel tree (serve it with any static web server).")
@click.option("--notes", default="", help="Release notes (shown by `smartosctl update check`).")
@click.option("--notes-file", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="Release notes from a file.")
@click.option("--min-version", default="", help="The oldest version that may update to this one.")
@click.option("--keys", "keys_dir", type=click.Path(path_type=Path), default=None,
              help="Signing keys (default: ~/.config/smartos/keys).")
@click.option("--fast", is_flag=True, help="Quicker bundle compression (zstd), a bigger bundle: "
              "for dev channels and tests.")
@valid_days_option
@settings_options
@click.pass_obj
@_errors_to_exit
def release(obj: dict[str, Any], channel: str, tree: Path, notes: str, notes_file: Path | None,
            min_version: str, keys_dir: Path | None, fast: bool, valid_days: int) -> None:
    """Build the image and its signed update bundle, publish the bundle into a channel, and sign
    the channel's index (devices refuse it once it expires: refresh it with release-refresh)."""
    from . import keys as keys_lib
    from . import release as release_lib
    from .pipeline import build as run_build

    cfg = _config(obj)
    signing = keys_lib.Keys(keys_dir or keys_lib.default_dir())
    signing.require_signing()
    release_lib.check_versions(cfg.version, min_version)
    index = release_lib.read_index(release_lib.index_path(tree, Channel(channel), cfg.board))
    if index and any(r.version == cfg.version for r in index.releases):
        raise SmartOSError(f"{cfg.version} is already released on {channel} for {cfg.board.value}: "
                           "releases are immutable", hint="set a new version: --set version=...")
    if notes_file is not None:
        notes = notes_file.read_text().strip()
    ctx = run_build(cfg, console, debug=obj["debug"], keys=signing, fast_bundle=fast)
    bundle = next(p for p in ctx.facts["outputs"] if p.suffix == ".raucb")
    published = release_lib.publish(
        bundle, tree, channel=Channel(channel), board=cfg.board, version=cfg.version,
        min_version=min_version, notes=notes, homeassistant=str(ctx.facts.get("homeassistant") or ""),
        build_id=ctx.facts["build_id"], m_hash=ctx.facts["manifest_hash"], keys=signing,
        valid_days=valid_days)
    console.print(f"[bold green]released[/] {cfg.version} on {channel}: {published} "
                  f"({bundle.stat().st_size / 2**20:.1f} MiB bundle; the index is valid for "
                  f"{valid_days} days: `smartos release-refresh` before then)")


@main.command(name="release-refresh")
@click.option("--channel", type=click.Choice([c.value for c in Channel]), required=True,
              help="The channel whose index to re-sign.")
@click.option("--to", "tree", type=click.Path(path_type=Path), default=Path("releases"),
              show_default=True, help="The channel tree.")
@click.option("--keys", "keys_dir", type=click.Path(path_type=Path), default=None,
              help="Signing keys (default: ~/.config/smartos/keys).")
@valid_days_option
@settings_options
@click.pass_obj
@_errors_to_exit
def release_refresh(obj: dict[str, Any], channel: str, tree: Path, keys_dir: Path | None,
                    valid_days: int) -> None:
    """Re-sign a channel's index, releases unchanged, with a new expiry (no build). Run it
    within every validity period (a timer on the publishing host will do): devices refuse an
    expired index, which keeps a stale or hostile server from holding them on old releases."""
    from . import keys as keys_lib
    from . import release as release_lib

    cfg = _config(obj)
    signing = keys_lib.Keys(keys_dir or keys_lib.default_dir())
    index = release_lib.refresh(tree, channel=Channel(channel), board=cfg.board, keys=signing,
                                valid_days=valid_days)
    console.print(f"[bold green]refreshed[/] {channel} for {cfg.board.value}: {len(index.releases)} "
                  f"release(s), index number {index.sequence}, valid until {index.expires}")
