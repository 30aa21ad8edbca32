"""Home Assistant Core: which release fits the image's Python, and what it needs to run offline.

The release list comes from PyPI's JSON API. The requirement set is derived from the release's own
wheel: its core dependencies, its `package_constraints.txt` pins, and the requirements of every
integration Home Assistant sets up on a fresh install (bootstrap's default integrations,
default_config, onboarding, ZHA, Z-Wave JS), following dependencies, after_dependencies and the
discovery integrations the way Home Assistant's own requirements loader does.
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import os
import re
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from .errors import SmartOSError

log = logging.getLogger("smartos")

PYPI = os.environ.get("SMARTOS_PYPI_URL", "https://pypi.org").rstrip("/")

# What SmartOS promises works with no internet on first start, beyond Home Assistant's defaults.
SEED_INTEGRATIONS = ("default_config", "onboarding", "zha", "zwave_js")
# Not Home Assistant requirements, but what the appliance needs beside them: a static ffmpeg
# binary (imageio-ffmpeg's wheel, for x86-64 and aarch64) for camera snapshots and TTS audio,
# instead of Debian's ffmpeg, which brings about 350 MB of libraries (Mesa, LLVM, SDL).
# 0.6.0 carries ffmpeg 7.1 in a 70 MB binary; 0.7+ carry a 170 MB build with far more codecs.
APPLIANCE_EXTRAS = ("imageio-ffmpeg==0.6.0",)
BOOTSTRAP_SETS = ("CORE_INTEGRATIONS", "LOGGING_AND_HTTP_DEPS_INTEGRATIONS",
                  "FRONTEND_INTEGRATIONS", "DEFAULT_INTEGRATIONS", "DISCOVERY_INTEGRATIONS")


@dataclass(frozen=True)
class Release:
    version: str
    wheel_url: str
    sha256: str
    requires_python: str


def _fetch_json(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:
            return json.load(resp)
    except (urllib.error.URLError, TimeoutError, json.JSONDecodeError) as exc:
        raise SmartOSError(f"cannot read {url}: {exc}",
                           hint="check the network, or set SMARTOS_PYPI_URL to a PyPI mirror") from None


def releases(cache_dir: Path) -> dict[str, Any]:
    """PyPI's release table for homeassistant; the last good copy is used when offline."""
    url = f"{PYPI}/pypi/homeassistant/json"
    copy = cache_dir / "pypi-homeassistant.json"
    try:
        data = _fetch_json(url)
    except SmartOSError:
        if not copy.exists():
            raise
        log.warning("PyPI unreachable; using the release list cached at %s", copy)
        data = json.loads(copy.read_text())
    else:
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_text(json.dumps({"releases": data["releases"]}))
    return {"releases": data["releases"], "base": url}


def pick_release(table: dict[str, Any], python_version: str, requested: str = "latest",
                 also: Sequence[str] = ()) -> Release:
    """The requested release, or the newest stable one whose Requires-Python admits the suite's
    python3 (python_version) or one of the pinned runtimes' Pythons in `also` (image/runtime.py)."""
    return candidates(table, python_version, requested, also)[0]


def candidates(table: dict[str, Any], python_version: str, requested: str = "latest",
               also: Sequence[str] = ()) -> list[Release]:
    """pick_release's choices, newest first: for `latest`, every stable release that fits; else
    the one requested, or an error saying why it cannot be."""
    pythons = [Version(python_version)] + [Version(p) for p in also]
    found: list[tuple[Version, Release]] = []
    for ver, files in table["releases"].items():
        try:
            v = Version(ver)
        except InvalidVersion:
            continue
        if requested == "latest" and (v.is_prerelease or v.is_devrelease):
            continue
        if requested != "latest" and ver != requested:
            continue
        for f in files:
            if f.get("packagetype") != "bdist_wheel" or f.get("yanked"):
                continue
            spec = f.get("requires_python") or ""
            try:
                fits = any(py in SpecifierSet(spec) for py in pythons)
            except InvalidSpecifier:
                fits = False
            if not fits:
                if requested != "latest":
                    pinned = "".join(f", or {p} (pinned runtime)" for p in also)
                    raise SmartOSError(
                        f"homeassistant.version: {ver} needs Python {spec}, the image has "
                        f"{python_version}{pinned}",
                        hint="pick an older release, 'latest', or pin a newer Python with "
                             "`smartos pin-runtime`")
                continue
            url = urllib.parse.urljoin(table.get("base", PYPI + "/"), f["url"])
            found.append((v, Release(ver, url, f["digests"]["sha256"], spec)))
    if not found:
        if requested != "latest":
            raise SmartOSError(f"homeassistant.version: no release {requested} on PyPI")
        raise SmartOSError(f"no Home Assistant release on PyPI supports Python "
                           f"{', '.join(str(p) for p in pythons)}")
    return [release for _, release in sorted(found, key=lambda c: c[0], reverse=True)]


def fetch_wheel(release: Release, cache_dir: Path) -> Path:
    """Download (once) and verify the release's wheel."""
    dest = cache_dir / "wheels" / f"homeassistant-{release.version}-py3-none-any.whl"
    if dest.exists() and hashlib.sha256(dest.read_bytes()).hexdigest() == release.sha256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".part")
    try:
        with urllib.request.urlopen(release.wheel_url, timeout=300) as resp, tmp.open("wb") as out:
            while chunk := resp.read(1 << 20):
                out.write(chunk)
    except (urllib.error.URLError, TimeoutError) as exc:
        raise SmartOSError(f"cannot download {release.wheel_url}: {exc}") from None
    if hashlib.sha256(tmp.read_bytes()).hexdigest() != release.sha256:
        tmp.unlink()
        raise SmartOSError(f"homeassistant {release.version}: wheel checksum mismatch")
    tmp.rename(dest)
    return dest


@dataclass(frozen=True)
class Requirements:
    version: str
    constraints: str  # Home Assistant's package_constraints.txt, verbatim
    integrations: tuple[str, ...]  # every integration whose requirements are included
    requirements: tuple[str, ...]  # homeassistant==V plus the integrations' requirements
    # the USB matchers of every integration's manifest (homeassistant/generated/usb.py): the
    # sticks Home Assistant's USB discovery recognises (image/radios.py names them)
    usb: tuple[dict[str, str], ...] = ()


class _Wheel:
    def __init__(self, path: Path) -> None:
        self.zip = zipfile.ZipFile(path)
        self.names = set(self.zip.namelist())

    def text(self, name: str) -> str:
        return self.zip.read(name).decode()

    def manifest(self, domain: str) -> dict[str, Any] | None:
        name = f"homeassistant/components/{domain}/manifest.json"
        return json.loads(self.text(name)) if name in self.names else None


def _literal(source: str, name: str, names: dict[str, Any] | None = None) -> Any:
    """The value of a module-level `NAME = <expression>` (or `NAME: T = ...`), or None when the
    module has no NAME. The expression may be a literal, or a collection that unpacks names
    given in `names` and set operations on them (`*(BASE_PLATFORMS - {"calendar"})`); anything
    else is an error, never a silently smaller set.

    Read without parsing the whole module: Home Assistant uses syntax newer than the host's Python.
    """
    m = re.search(rf"^{name}(?:\s*:[^=\n]+)?\s*=\s*", source, re.MULTILINE)
    if not m:
        return None
    start = m.end()
    opening = source[start]
    closing = {"{": "}", "(": ")", "[": "]"}.get(opening)
    if closing is None:
        return None
    depth = 0
    for pos in range(start, len(source)):
        ch = source[pos]
        if ch in "{([":
            depth += 1
        elif ch in "})]":
            depth -= 1
            if depth == 0:
                try:
                    return _evaluate(ast.parse(source[start:pos + 1], mode="eval").body, names or {})
                except (ValueError, SyntaxError) as exc:
                    raise SmartOSError(f"Home Assistant's {name} changed shape ({exc}); SmartOS cannot "
                                       "derive the offline package set from it") from None
    return None


def _evaluate(node: ast.expr, names: dict[str, Any]) -> Any:
    """A literal, a name from names, a collection with starred parts, a set difference or union."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.Set, ast.List, ast.Tuple)):
        items: list[Any] = []
        for elt in node.elts:
            if isinstance(elt, ast.Starred):
                items += list(_evaluate(elt.value, names))
            else:
                items.append(_evaluate(elt, names))
        kind = {ast.Set: set, ast.List: list, ast.Tuple: tuple}[type(node)]
        return kind(items)
    if isinstance(node, ast.Dict) and None not in node.keys:
        return {_evaluate(k, names): _evaluate(v, names) for k, v in zip(node.keys, node.values, strict=True)
                if k is not None}
    if isinstance(node, ast.Name) and node.id in names:
        return names[node.id]
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Sub, ast.BitOr)):
        left, right = set(_evaluate(node.left, names)), set(_evaluate(node.right, names))
        return left - right if isinstance(node.op, ast.Sub) else left | right
    raise ValueError(f"unsupported expression {ast.dump(node)[:80]}")


def _platforms(wheel: _Wheel) -> set[str] | None:
    """BASE_PLATFORMS: the values of the entity platform enum (Platform in homeassistant/const.py,
    generated into homeassistant/generated/entity_platforms.py since 2025)."""
    for name in ("homeassistant/generated/entity_platforms.py", "homeassistant/const.py"):
        if name not in wheel.names:
            continue
        m = re.search(r"^class (?:Platform|EntityPlatforms)\(StrEnum\):\n((?:[ \t]+.*\n|\n)+)",
                      wheel.text(name), re.MULTILINE)
        if m:
            return set(re.findall(r'^\s+[A-Z_]+ = "([a-z_]+)"', m.group(1), re.MULTILINE))
    return None  # a set that uses BASE_PLATFORMS is then refused by _literal


def derive(wheel_path: Path, version: str, seeds: tuple[str, ...] = SEED_INTEGRATIONS) -> Requirements:
    """The integration closure and its requirements, as Home Assistant would install them."""
    wheel = _Wheel(wheel_path)
    boot = wheel.text("homeassistant/bootstrap.py")
    discovery: dict[str, tuple[str, ...]] = _literal(
        wheel.text("homeassistant/requirements.py"), "DISCOVERY_INTEGRATIONS") or {}
    todo = list(seeds)
    platforms = _platforms(wheel)
    names = {"BASE_PLATFORMS": platforms} if platforms is not None else {}
    for name in BOOTSTRAP_SETS:
        todo += list(_literal(boot, name, names) or ())
    if not todo or not discovery:
        raise SmartOSError(f"homeassistant {version}: its bootstrap or requirements loader "
                           "changed shape; SmartOS cannot derive the offline package set")
    seen: set[str] = set()
    reqs: set[str] = set()
    while todo:
        domain = todo.pop()
        if domain in seen:
            continue
        manifest = wheel.manifest(domain)
        if manifest is None:
            continue
        seen.add(domain)
        reqs.update(manifest.get("requirements", []))
        todo += manifest.get("dependencies", []) + manifest.get("after_dependencies", [])
        todo += [d for d, keys in discovery.items() if any(k in manifest for k in keys)]
    # Auth modules (TOTP) load on every start and check_config runs from smartosctl: their
    # REQUIREMENTS are module-level literals, installed on demand just like an integration's.
    for name in sorted(wheel.names):
        if name.startswith("homeassistant/auth/") and name.endswith(".py") or \
                name == "homeassistant/scripts/check_config.py":
            reqs.update(_literal(wheel.text(name), "REQUIREMENTS") or ())
    constraints = wheel.text("homeassistant/package_constraints.txt")
    usb = _literal(wheel.text("homeassistant/generated/usb.py"), "USB") \
        if "homeassistant/generated/usb.py" in wheel.names else []
    return Requirements(version, constraints, tuple(sorted(seen)),
                        (f"homeassistant=={version}", *sorted(reqs, key=str.lower),
                         *APPLIANCE_EXTRAS), tuple(usb or ()))
