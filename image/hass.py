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
import urllib.error
import urllib.parse
import urllib.request
import zipfile
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


def pick_release(table: dict[str, Any], python_version: str, requested: str = "latest") -> Release:
    """The requested release, or the newest stable one whose Requires-Python admits python_version."""
    py = Version(python_version)
    candidates: list[tuple[Version, Release]] = []
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
                fits = py in SpecifierSet(spec)
            except InvalidSpecifier:
                fits = False
            if not fits:
                if requested != "latest":
                    raise SmartOSError(
                        f"homeassistant.version: {ver} needs Python {spec}, the image has "
                        f"{python_version}",
                        hint="pick an older release, 'latest', or a newer debian.suite")
                continue
            url = urllib.parse.urljoin(table.get("base", PYPI + "/"), f["url"])
            candidates.append((v, Release(ver, url, f["digests"]["sha256"], spec)))
    if not candidates:
        if requested != "latest":
            raise SmartOSError(f"homeassistant.version: no release {requested} on PyPI")
        raise SmartOSError(f"no Home Assistant release on PyPI supports Python {python_version}")
    return max(candidates, key=lambda c: c[0])[1]


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


class _Wheel:
    def __init__(self, path: Path) -> None:
        self.zip = zipfile.ZipFile(path)
        self.names = set(self.zip.namelist())

    def text(self, name: str) -> str:
        return self.zip.read(name).decode()

    def manifest(self, domain: str) -> dict[str, Any] | None:
        name = f"homeassistant/components/{domain}/manifest.json"
        return json.loads(self.text(name)) if name in self.names else None


def _literal_sets(source: str) -> dict[str, Any]:
    """Module-level NAME = {...} / (...) / {"k": (...)} literals of strings."""
    found: dict[str, Any] = {}
    for node in ast.parse(source).body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        value = getattr(node, "value", None)
        if not isinstance(target, ast.Name) or value is None:
            continue
        try:
            found[target.id] = ast.literal_eval(value)
        except ValueError:
            continue
    return found


def derive(wheel_path: Path, version: str, seeds: tuple[str, ...] = SEED_INTEGRATIONS) -> Requirements:
    """The integration closure and its requirements, as Home Assistant would install them."""
    wheel = _Wheel(wheel_path)
    boot = _literal_sets(wheel.text("homeassistant/bootstrap.py"))
    loader = _literal_sets(wheel.text("homeassistant/requirements.py"))
    discovery: dict[str, tuple[str, ...]] = loader.get("DISCOVERY_INTEGRATIONS", {})
    todo = list(seeds)
    for name in BOOTSTRAP_SETS:
        todo += list(boot.get(name, ()))
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
    constraints = wheel.text("homeassistant/package_constraints.txt")
    return Requirements(version, constraints, tuple(sorted(seen)),
                        (f"homeassistant=={version}", *sorted(reqs, key=str.lower)))
