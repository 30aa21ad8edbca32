"""Build settings: typed, validated once, up front.

Defaults come from data/defaults.yaml; a user YAML file and `--set key=value` overrides are laid
over them. Every error names where the value came from, the key, and what was expected.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from .errors import SmartOSError

DEFAULTS_FILE = Path(__file__).parent / "data" / "defaults.yaml"


class Board(StrEnum):
    X86_64 = "x86-64"  # UEFI PCs
    RPI4 = "rpi4"  # Raspberry Pi 4 B, 400, CM4
    RPI3 = "rpi3"  # Raspberry Pi 3 B, 3 B+


class Suite(StrEnum):
    TRIXIE = "trixie"
    FORKY = "forky"


@dataclass(frozen=True)
class Debian:
    suite: Suite
    mirror: str


@dataclass(frozen=True)
class HomeAssistant:
    version: str


@dataclass(frozen=True)
class Admin:
    user: str
    ssh_keys: tuple[str, ...]
    ssh_key_files: tuple[str, ...]


class Channel(StrEnum):
    STABLE = "stable"
    BETA = "beta"
    DEV = "dev"


class UpdatePolicy(StrEnum):
    NOTIFY = "notify"    # the daily check logs and shows what is available; the owner installs
    INSTALL = "install"  # the daily check installs and reboots into it (health-gated)


@dataclass(frozen=True)
class Update:
    url: str             # where the channel tree is served; empty: no automatic checks
    channel: Channel
    policy: UpdatePolicy
    keyring: str         # the CA certificate devices trust; empty: the default key directory's


@dataclass(frozen=True)
class Partitions:
    """Sizes in MiB."""

    esp: int
    root: int
    data: int


@dataclass(frozen=True)
class Config:
    board: Board
    version: str
    hostname: str
    timezone: str
    locale: str
    debian: Debian
    homeassistant: HomeAssistant
    admin: Admin
    extra_packages: tuple[str, ...]
    extra_trees: tuple[str, ...]
    update: Update
    partitions: Partitions
    output_dir: Path
    cache_dir: Path
    compress: bool
    source: str = field(default="defaults", compare=False)

    def authorized_keys(self) -> list[str]:
        """Every admin public key: inline ones, then the contents of the key files."""
        keys = list(self.admin.ssh_keys)
        for name in self.admin.ssh_key_files:
            keys += [ln.strip() for ln in Path(name).read_text().splitlines() if ln.strip()]
        return keys

    def update_keyring(self) -> Path | None:
        """The update CA certificate baked into the image: the setting, else the default key
        directory's (smartos keys init), else none (the image then refuses every bundle)."""
        if self.update.keyring:
            return Path(self.update.keyring)
        from .keys import default_dir

        default = default_dir() / "ca.cert.pem"
        return default if default.is_file() else None

    def as_dict(self) -> dict[str, Any]:
        def plain(v: Any) -> Any:
            if dataclasses.is_dataclass(v) and not isinstance(v, type):
                return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)
                        if f.name != "source"}
            if isinstance(v, tuple | list):
                return [plain(x) for x in v]
            if isinstance(v, Path | StrEnum):
                return str(v)
            return v

        return typing.cast(dict[str, Any], plain(self))


HOSTNAME_RE = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
VERSION_RE = re.compile(r"^[0-9][0-9A-Za-z.+~-]{0,39}$")
HA_VERSION_RE = re.compile(r"^(latest|[0-9]{4}\.[0-9]{1,2}\.[0-9]+)$")
PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
SIZE_RE = re.compile(r"^\s*([0-9]+)\s*(MiB|GiB)\s*$")
SSH_KEY_RE = re.compile(r"^(ssh-(ed25519|rsa)|ecdsa-sha2-nistp(256|384|521)|sk-\S+) [A-Za-z0-9+/=]+")

MIN_SIZES = {"esp": 32, "root": 1536, "data": 256}


def _err(source: str, key: str, expected: str, got: Any) -> SmartOSError:
    return SmartOSError(f"{source}: {key}: expected {expected}, got {got!r}")


Origins = dict[str, str]  # dotted key -> where its value came from (a file, --set ..., defaults)


def _merge(base: dict[str, Any], over: dict[str, Any], source: str, origins: Origins,
           prefix: str = "") -> None:
    for key, value in over.items():
        dotted = f"{prefix}{key}"
        if key not in base:
            known = ", ".join(sorted(base))
            raise SmartOSError(f"{source}: unknown key {dotted!r}", hint=f"known keys here: {known}")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise _err(source, dotted, "a mapping", value)
            _merge(base[key], value, source, origins, f"{dotted}.")
        else:
            base[key] = value
            origins[dotted] = source


def _set_override(assignment: str) -> dict[str, Any]:
    """Turn `a.b=value` into {'a': {'b': value}}, parsing value as YAML (so lists and numbers work)."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key:
        raise SmartOSError(f"--set {assignment!r}: expected KEY=VALUE, e.g. hostname=kitchen")
    out: dict[str, Any] = {}
    node = out
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else ""
    return out


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SmartOSError(f"config file {path} does not exist") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise SmartOSError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SmartOSError(f"{path}: expected a mapping of settings at the top level")
    return data


def _convert(tp: Any, value: Any, origins: Origins, key: str) -> Any:
    origin = typing.get_origin(tp)
    source = origins.get(key, "defaults")
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, origins, f"{key}.")
    if isinstance(tp, type) and issubclass(tp, StrEnum):
        choices = ", ".join(m.value for m in tp)
        if not isinstance(value, str) or value not in {m.value for m in tp}:
            raise _err(source, key, f"one of {choices}", value)
        return tp(value)
    if origin is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _err(source, key, "a list of strings", value)
        return tuple(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise _err(source, key, "true or false", value)
        return value
    if tp is int:  # sizes
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise _err(source, key, "a size such as 512MiB or 2GiB", value)
        m = SIZE_RE.match(str(value))
        if not m:
            raise _err(source, key, "a size such as 512MiB or 2GiB", value)
        return int(m.group(1)) * (1024 if m.group(2) == "GiB" else 1)
    if tp is str or tp is Path:
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise _err(source, key, "a string", value)
        return value
    raise TypeError(f"unsupported config type {tp!r}")  # pragma: no cover - schema bug


def _build(cls: Any, data: dict[str, Any], origins: Origins, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls, vars(types) | globals())
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name == "source":
            continue
        kwargs[f.name] = _convert(hints[f.name], data[f.name], origins, f"{prefix}{f.name}")
    return cls(**kwargs)


def load_config(
    path: Path | None = None,
    overrides: tuple[str, ...] = (),
    *,
    board: str | None = None,
) -> Config:
    """Defaults, then the user file, then --set overrides and --board; validated as a whole."""
    tree = _read_yaml(DEFAULTS_FILE)
    origins: Origins = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        _merge(tree, _read_yaml(path), source, origins)
    for assignment in overrides:
        _merge(tree, _set_override(assignment), f"--set {assignment}", origins)
    if board is not None:
        _merge(tree, {"board": board}, "--board", origins)
    base_dir = path.parent if path is not None else Path.cwd()
    cfg = _build(Config, tree, origins)
    cfg = _resolve_paths(cfg, base_dir)
    _validate(cfg, origins)
    return dataclasses.replace(cfg, source=source)


def _resolve_paths(cfg: Config, base_dir: Path) -> Config:
    cache = str(cfg.cache_dir)
    if not cache:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        cache_dir = Path(xdg) / "smartos"
    else:
        cache_dir = Path(cache).expanduser()
    key_files = tuple(str((base_dir / Path(k).expanduser()).resolve()) for k in cfg.admin.ssh_key_files)
    trees = tuple(str((base_dir / Path(t).expanduser()).resolve()) for t in cfg.extra_trees)
    keyring = cfg.update.keyring
    if keyring:
        keyring = str((base_dir / Path(keyring).expanduser()).resolve())
    return dataclasses.replace(
        cfg,
        extra_trees=trees,
        update=dataclasses.replace(cfg.update, keyring=keyring),
        output_dir=Path(str(cfg.output_dir)).expanduser().resolve(),
        cache_dir=cache_dir.resolve(),
        admin=dataclasses.replace(cfg.admin, ssh_key_files=key_files),
    )


def _validate(cfg: Config, origins: Origins) -> None:
    def fail(key: str, expected: str, got: Any, origin_key: str | None = None) -> SmartOSError:
        return _err(origins.get(origin_key or key, "defaults"), key, expected, got)

    if not HOSTNAME_RE.match(cfg.hostname):
        raise fail("hostname", "a DNS label: 1-63 of a-z, 0-9 and '-', not starting or "
                   "ending with '-'", cfg.hostname)
    if not USER_RE.match(cfg.admin.user) or cfg.admin.user == "root":
        raise fail("admin.user", "a lower-case login name other than root", cfg.admin.user)
    if not VERSION_RE.match(cfg.version):
        raise fail("version", "a version such as 1.2.0 (starting with a digit)", cfg.version)
    if not HA_VERSION_RE.match(cfg.homeassistant.version):
        raise fail("homeassistant.version",
                   "'latest' or a release such as 2026.2.3", cfg.homeassistant.version)
    if not re.match(r"^https?://[^\s/]+", cfg.debian.mirror):
        raise fail("debian.mirror", "an http:// or https:// URL", cfg.debian.mirror)
    if not Path("/usr/share/zoneinfo", cfg.timezone).is_file() and cfg.timezone != "Etc/UTC":
        raise fail("timezone", "a tz database name such as Europe/Berlin", cfg.timezone)
    if not re.match(r"^(C|[a-z]{2,3}_[A-Z]{2})\.UTF-8$", cfg.locale):
        raise fail("locale", "C.UTF-8 or a UTF-8 locale such as en_US.UTF-8", cfg.locale)
    for pkg in cfg.extra_packages:
        if not PACKAGE_RE.match(pkg):
            raise fail("extra_packages", "Debian package names", pkg)
    for tree in cfg.extra_trees:
        if not Path(tree).is_dir():
            raise fail("extra_trees", "directories to copy over the root filesystem", tree)
    if cfg.update.url and not re.match(r"^https?://[^\s/]+", cfg.update.url):
        raise fail("update.url", "an http:// or https:// URL (or empty: no automatic checks)",
                   cfg.update.url)
    if cfg.update.keyring and not Path(cfg.update.keyring).is_file():
        raise fail("update.keyring", "a PEM file with the update CA certificate "
                   "(smartos keys init makes one)", cfg.update.keyring)
    for name, minimum in MIN_SIZES.items():
        size = getattr(cfg.partitions, name)
        if size < minimum:
            raise fail(f"partitions.{name}", f"at least {minimum}MiB", f"{size}MiB")
    for i, key in enumerate(cfg.admin.ssh_keys):
        if not SSH_KEY_RE.match(key.strip()):
            raise fail(f"admin.ssh_keys[{i}]", "an OpenSSH public key line (ssh-ed25519 AAAA...)",
                       key[:40], origin_key="admin.ssh_keys")
    for name in cfg.admin.ssh_key_files:
        p = Path(name)
        if not p.is_file():
            raise fail("admin.ssh_key_files", "a readable public key file", name)
        for line in filter(None, (ln.strip() for ln in p.read_text().splitlines())):
            if not SSH_KEY_RE.match(line):
                raise fail("admin.ssh_key_files",
                           f"OpenSSH public keys in {name}", line[:40])
