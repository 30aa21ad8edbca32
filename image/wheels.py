"""Python packages for a foreign architecture, resolved and installed from the build host.

The Home Assistant venv for an arm64 image is installed by the native (amd64) builder with uv's
--python-platform: wheels are chosen for the target, and byte code is compiled by the same Python
version natively (.pyc files do not depend on the CPU). The few packages that publish no wheel
for the target (an sdist only) are cross-compiled natively, once, into a wheelhouse that later
builds reuse: nothing here runs under emulation.
"""

from __future__ import annotations

import hashlib
import tomllib
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import canonicalize_name, parse_wheel_filename

from .errors import SmartOSError

# Debian architecture -> (uv --python-platform, the machine in wheel platform tags)
PLATFORMS = {"arm64": ("aarch64-manylinux_2_40", "aarch64"), "amd64": ("x86_64-manylinux_2_40", "x86_64")}
GLIBC_MINOR = 40  # trixie has glibc 2.41; uv's newest manylinux target is 2_40
# Debian architecture -> its GNU triplet (cross compilers' prefix) and Python's platform name
CROSS = {"arm64": ("aarch64-linux-gnu", "linux-aarch64")}


def cross_packages(arch: str) -> list[str]:
    """What a native Debian tree needs to build arch's Python extensions: the cross compilers
    and arch's Python headers, whose sysconfig data names those compilers."""
    gnu = CROSS[arch][0]
    return [f"gcc-{gnu}", f"g++-{gnu}", f"libpython3-dev:{arch}"]


def cross_env(arch: str) -> dict[str, str]:
    """Make the native Python build extensions for arch: its sysconfig data (compilers, flags,
    extension suffix) is arch's, and the wheel is tagged with arch's platform."""
    gnu, platform = CROSS[arch]
    return {"_PYTHON_SYSCONFIGDATA_NAME": f"_sysconfigdata__linux_{gnu}", "_PYTHON_HOST_PLATFORM": platform,
            "CC": f"{gnu}-gcc", "CXX": f"{gnu}-g++", "AR": f"{gnu}-ar"}


@dataclass(frozen=True)
class Sdist:
    name: str
    version: str
    url: str
    sha256: str

    @property
    def filename(self) -> str:
        return urllib.parse.unquote(self.url.rsplit("/", 1)[-1])


def supported_tags(arch: str, python: str) -> set[Tag]:
    machine = PLATFORMS[arch][1]
    major, minor = (int(x) for x in python.split(".")[:2])
    platforms = [f"manylinux_2_{m}_{machine}" for m in range(GLIBC_MINOR, 16, -1)]
    platforms += [f"manylinux2014_{machine}", f"linux_{machine}"]
    tags = set(cpython_tags((major, minor), platforms=platforms))
    tags |= set(compatible_tags((major, minor), f"cp{major}{minor}", platforms=platforms))
    return tags


def wheel_fits(filename: str, tags: set[Tag]) -> bool:
    return bool(set(parse_wheel_filename(filename)[3]) & tags)


def sdist_only(pylock: Path, arch: str, python: str) -> list[Sdist]:
    """Packages of a resolved pylock.toml with no wheel the target can use."""
    tags = supported_tags(arch, python)
    out = []
    for pkg in tomllib.loads(pylock.read_text())["packages"]:
        names = [urllib.parse.unquote(w["url"].rsplit("/", 1)[-1]) for w in pkg.get("wheels", [])]
        if any(wheel_fits(n, tags) for n in names):
            continue
        sdist = pkg.get("sdist")
        if not sdist:
            raise SmartOSError(f"{pkg['name']} {pkg['version']} has neither a wheel for {arch} nor "
                               "a source distribution on the index")
        out.append(Sdist(pkg["name"], pkg["version"], sdist["url"], sdist["hashes"]["sha256"]))
    return out


def have_wheel(wheelhouse: Path, sdist: Sdist, tags: set[Tag]) -> bool:
    for whl in wheelhouse.glob("*.whl"):
        name, version, _, wtags = parse_wheel_filename(whl.name)
        if (name == canonicalize_name(sdist.name) and str(version) == sdist.version
                and set(wtags) & tags):
            return True
    return False


def download(sdist: Sdist, dest_dir: Path) -> Path:
    """Fetch an sdist and check it against the hash the resolver recorded."""
    dest = dest_dir / sdist.filename
    tmp = dest.with_name(dest.name + ".part")
    h = hashlib.sha256()
    with urllib.request.urlopen(sdist.url, timeout=120) as resp, tmp.open("wb") as fh:
        while chunk := resp.read(1 << 20):
            h.update(chunk)
            fh.write(chunk)
    if h.hexdigest() != sdist.sha256:
        tmp.unlink()
        raise SmartOSError(f"{sdist.filename}: sha256 {h.hexdigest()} does not match the index's "
                           f"{sdist.sha256}")
    tmp.rename(dest)
    return dest
