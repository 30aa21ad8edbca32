"""The Python that runs Home Assistant.

Home Assistant supports one Python minor version at a time, and its releases move to a new one
about a year before Debian's stable release ships it. So the image's Debian suite gives its own
python3 when Home Assistant's Requires-Python admits it, and otherwise a pinned runtime: the
interpreter and standard library of a newer Debian suite (python3.14 from forky), unpacked into a
private prefix (/opt/smartos/python3.14) together with that suite's C library and loader. The
interpreter's ELF header names the private loader, and its RPATH the private libc, so only Home
Assistant's process runs on the newer glibc; every other program (systemd, sshd, RAUC, nft,
smartosctl) keeps the suite's own, with Debian's security support. The extension modules load the
suite's OpenSSL, SQLite, zlib, expat and libffi, which the suite keeps patched.

The pins (image/data/python-runtimes.toml) are made by `smartos pin-runtime`, which reads the
newer suite's package index after checking its signature against debian-archive-keyring, and
records each package's version, pool path, size and SHA256. A build downloads exactly those files
into its cache and refuses any other bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import lzma
import re
import shutil
import tempfile
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from . import hass
from .errors import SmartOSError
from .run import run

PINS = Path(__file__).parent / "data" / "python-runtimes.toml"
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
ARCHES = ("amd64", "arm64")
PREFIX_DIR = "/opt/smartos"  # the runtime of Python X.Y lives in PREFIX_DIR/pythonX.Y
# Debian architecture -> the directory of its shared libraries and its loader's name
LOADERS = {"amd64": ("x86_64-linux-gnu", "ld-linux-x86-64.so.2"),
           "arm64": ("aarch64-linux-gnu", "ld-linux-aarch64.so.1")}
# What runs Home Assistant: the interpreter, the standard library, the C library it was built for.
RUN_PACKAGES = ("python{v}-minimal", "libpython{v}-minimal", "libpython{v}-stdlib", "libc6")
# What builds extension modules for it (the few wheels PyPI lacks): headers and build settings.
# Never in an image.
BUILD_PACKAGES = ("libpython{v}-dev",)
# Unpacked but not shipped: documentation (the copyright files stay), configuration meant for the
# system's own loader and Python, and the link to /etc's sitecustomize (nothing from /etc is
# imported by the runtime).
DROP = ("usr/share/man", "usr/share/lintian", "usr/share/doc-base", "usr/share/binfmts", "etc",
        "usr/lib64", "usr/share/gdb", "usr/lib/{triplet}/gconv", "usr/lib/python{v}/sitecustomize.py",
        "usr/lib/{triplet}/audit", "usr/bin/pdb{v}", "usr/bin/pydoc{v}", "usr/bin/pygettext{v}")


@dataclass(frozen=True)
class Deb:
    package: str
    version: str
    arch: str
    filename: str  # the pool path below the mirror's root
    size: int
    sha256: str
    role: str  # "run" (in the image) or "build" (wheels only)

    @property
    def basename(self) -> str:
        return self.filename.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Runtime:
    python: str  # the interpreter's version, "3.14.8"
    suite: str  # the Debian suite it comes from
    index_date: str  # the date of the suite's signed index it was pinned from
    debs: tuple[Deb, ...] = field(default=())

    @property
    def minor(self) -> str:
        return ".".join(self.python.split(".")[:2])

    @property
    def prefix(self) -> str:
        return f"{PREFIX_DIR}/python{self.minor}"

    @property
    def interpreter_path(self) -> str:
        """The interpreter, relative to the prefix."""
        return f"usr/bin/python{self.minor}"

    @property
    def interpreter(self) -> str:
        return f"{self.prefix}/{self.interpreter_path}"

    def packages(self, arch: str, role: str = "run") -> list[Deb]:
        return [d for d in self.debs if d.arch == arch and d.role == role]

    def origin(self, arch: str) -> dict[str, object]:
        """What the image's manifest and SBOM say about where the runtime comes from."""
        return {"python": self.python, "prefix": self.prefix, "debian_suite": self.suite,
                "index_date": self.index_date,
                "packages": [{"name": d.package, "version": d.version, "sha256": d.sha256}
                             for d in self.packages(arch)]}


@dataclass(frozen=True)
class Choice:
    """The Python a Home Assistant release runs on in the image, and why."""
    python: str
    runtime: Runtime | None  # None: the suite's own python3
    reason: str
    skipped: tuple[str, ...] = ()  # newer releases `latest` passed over, each with why


def load(path: Path = PINS) -> list[Runtime]:
    """The pinned runtimes, newest first."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SmartOSError(f"{path}: {exc}") from None
    runtimes = []
    for i, entry in enumerate(data.get("runtime", [])):
        try:
            debs = tuple(Deb(**d) for d in entry.get("deb", []))
            runtimes.append(Runtime(entry["python"], entry["suite"], entry["index_date"], debs))
        except (KeyError, TypeError) as exc:
            raise SmartOSError(f"{path}: runtime[{i}]: {exc}",
                               hint="run `smartos pin-runtime` to write it again") from None
    return sorted(runtimes, key=lambda r: Version(r.python), reverse=True)


def _fits(python: str, requires: str) -> bool:
    try:
        return Version(python) in SpecifierSet(requires)
    except InvalidSpecifier:
        return False


LATEST_TRIES = 3  # releases `latest` tries, newest first, before it gives up


def select(cache_dir: Path, suite: str, suite_python: str, requested: str,
           runtimes: Sequence[Runtime] | None = None,
           installable: Callable[[hass.Release, Choice], str] | None = None) -> tuple[hass.Release, Choice]:
    """The Home Assistant release a build installs (PyPI's list, cached in cache_dir) and the
    Python it runs on: what `smartos check` prints and what the venv stage builds.

    `latest` is the newest stable release that the suite's python3 or a pinned runtime can run
    and, when `installable` is given, whose requirements resolve on the package index (it
    returns why not, or ""): a release can pin a package version its index does not have yet
    (2026.11.0 and universal-silabs-flasher 1.3.0). Such a release is passed over, and the
    choice says so. A release asked for by name is taken as it is; the venv stage then fails
    with the resolver's own words."""
    runtimes = load() if runtimes is None else runtimes
    table = hass.releases(cache_dir)
    found = hass.candidates(table, suite_python, requested, also=[r.python for r in runtimes])
    skipped: list[str] = []
    for release in found[:LATEST_TRIES if requested == "latest" and installable else 1]:
        choice = choose(release.requires_python, suite, suite_python, runtimes)
        problem = installable(release, choice) if requested == "latest" and installable else ""
        if not problem:
            return release, dataclasses.replace(choice, skipped=tuple(skipped))
        skipped.append(f"{release.version}: {problem}")
    raise SmartOSError("no recent Home Assistant release can be installed: " + "; ".join(skipped),
                       hint="set homeassistant.version to a release that can")


def choose(requires: str, suite: str, suite_python: str, runtimes: Sequence[Runtime]) -> Choice:
    """The suite's python3 when it meets requires (Debian patches it); else the newest pinned
    runtime that does."""
    if _fits(suite_python, requires):
        return Choice(suite_python, None,
                      f"Debian {suite}'s python3 {suite_python} meets Requires-Python {requires}")
    for rt in runtimes:
        if _fits(rt.python, requires):
            return Choice(rt.python, rt,
                          f"Debian {suite} has Python {suite_python}, Requires-Python is {requires}: "
                          f"the runtime pinned from Debian {rt.suite} ({rt.index_date}) in {rt.prefix}")
    pinned = ", ".join(r.python for r in runtimes) or "none"
    raise SmartOSError(f"Requires-Python {requires}: Debian {suite} has {suite_python}, pinned "
                       f"runtimes: {pinned}",
                       hint="pin one with `smartos pin-runtime X.Y --suite <newer suite>`, or pick an "
                            "older homeassistant.version")


def fetch(runtime: Runtime, arch: str, mirror: str, cache_dir: Path,
          role: str = "run") -> list[Path]:
    """The pinned .debs for arch, from the cache or the mirror, each checked against its pin."""
    debs = runtime.packages(arch, role)
    if not debs:
        raise SmartOSError(f"the Python {runtime.python} runtime has no {role} packages pinned for {arch}",
                           hint=f"run `smartos pin-runtime {runtime.minor} --suite {runtime.suite}`")
    store = cache_dir / "debs" / f"runtime-{runtime.suite}-{arch}"
    store.mkdir(parents=True, exist_ok=True)
    return [_fetch_deb(deb, runtime, mirror.rstrip("/"), store) for deb in debs]


def _fetch_deb(deb: Deb, runtime: Runtime, mirror: str, store: Path) -> Path:
    dest = store / deb.basename
    if dest.is_file() and _sha256(dest) == deb.sha256:
        return dest
    url = f"{mirror}/{deb.filename}"
    part = dest.with_name(f".{dest.name}.part")
    try:
        with urllib.request.urlopen(url, timeout=120) as resp, part.open("wb") as out:
            shutil.copyfileobj(resp, out, 1 << 20)
    except urllib.error.HTTPError as exc:
        part.unlink(missing_ok=True)
        if exc.code == 404:
            raise SmartOSError(
                f"the Python {runtime.python} runtime's {deb.package} {deb.version} ({deb.arch}) is gone "
                f"from {mirror} (Debian {runtime.suite} has moved on)",
                hint=f"pin what the mirror has now: `smartos pin-runtime {runtime.minor} --suite "
                     f"{runtime.suite}`; or set debian.mirror to a snapshot.debian.org URL of "
                     f"{runtime.index_date}") from None
        raise SmartOSError(f"cannot download {url}: {exc}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        part.unlink(missing_ok=True)
        raise SmartOSError(f"cannot download {url}: {exc}",
                           hint="check the network or debian.mirror") from None
    got = _sha256(part)
    if got != deb.sha256:
        part.unlink()
        raise SmartOSError(f"{url}: sha256 {got} is not the pinned {deb.sha256}",
                           hint="the mirror serves other bytes under this name; do not use it")
    part.rename(dest)
    return dest


def _sha256(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def unpack(runtime: Runtime, arch: str, debs: Iterable[Path], dest: Path,
           logfile: Path | None = None) -> None:
    """Unpack the runtime's .debs into dest (which stands for runtime.prefix) and drop what it
    does not run."""
    dest.mkdir(parents=True, exist_ok=True)
    for deb in debs:
        run(["dpkg-deb", "--extract", deb, dest], logfile=logfile)
    triplet = LOADERS[arch][0]
    for pattern in DROP:
        victim = dest / pattern.format(v=runtime.minor, triplet=triplet)
        if victim.is_dir() and not victim.is_symlink():
            shutil.rmtree(victim)
        elif victim.exists() or victim.is_symlink():
            victim.unlink()
    for doc in (dest / "usr/share/doc").glob("*/*"):
        if doc.name != "copyright":
            doc.unlink() if not doc.is_dir() or doc.is_symlink() else shutil.rmtree(doc)


def patchelf_args(runtime: Runtime, arch: str, interpreter: str) -> list[str]:
    """patchelf arguments that make the interpreter (the file, wherever it is unpacked) start on
    the runtime's own loader and libc once it is at runtime.prefix. --no-sort: patchelf 0.18
    otherwise rewrites the program headers of Debian's non-PIE python into a layout that crashes
    at start."""
    triplet, loader = LOADERS[arch]
    libs = f"{runtime.prefix}/usr/lib/{triplet}"
    return ["--no-sort", "--set-interpreter", f"{libs}/{loader}", "--force-rpath", "--set-rpath", libs,
            interpreter]


def build_env(runtime: Runtime) -> dict[str, str]:
    """Compiling an extension against the runtime: Debian's multiarch pyconfig.h includes
    <TRIPLET/pythonX.Y/pyconfig.h>, which is below the prefix, not below /usr/include."""
    flags = f"-I{runtime.prefix}/usr/include"
    return {"CPPFLAGS": flags, "CFLAGS": flags, "CXXFLAGS": flags}


def add_cross_settings(runtime: Runtime, arch: str, foreign: Path, tree: Path) -> None:
    """Give a native runtime tree what cross-compiling extensions for arch needs: arch's
    pyconfig.h (below usr/include/TRIPLET) and its sysconfig data, which names arch's compilers
    and extension suffix (selected with _PYTHON_SYSCONFIGDATA_NAME, see wheels.cross_env)."""
    triplet = LOADERS[arch][0]
    include = f"usr/include/{triplet}"
    shutil.copytree(foreign / include, tree / include, symlinks=True, dirs_exist_ok=True)
    stdlib = f"usr/lib/python{runtime.minor}"
    for data in (foreign / stdlib).glob(f"_sysconfigdata__*{triplet}.py"):
        shutil.copy2(data, tree / stdlib / data.name, follow_symlinks=True)


# -- pinning (a developer's step: `smartos pin-runtime`) ------------------------------------------

_FIELD = re.compile(r"^([\w-]+): (.*)$", re.M)


def _get(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=120) as resp:
            data: bytes = resp.read()
            return data
    except (urllib.error.URLError, TimeoutError) as exc:
        raise SmartOSError(f"cannot read {url}: {exc}") from None


def _verified_release(mirror: str, suite: str, keyring: Path, logfile: Path | None) -> str:
    """The suite's InRelease, its signature checked with gpgv against keyring. Valid-Until is
    not enforced: the pins carry hashes, so an old index can only pin old files, never forged ones."""
    signed = _get(f"{mirror}/dists/{suite}/InRelease")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "InRelease"
        path.write_bytes(signed)
        out = Path(tmp) / "Release"
        run(["gpgv", "--keyring", keyring, "--output", out, path], logfile=logfile)
        return out.read_text()


def _packages_index(mirror: str, suite: str, arch: str, release: str) -> str:
    rel = f"main/binary-{arch}/Packages.xz"
    sums = release.split("SHA256:", 1)[-1]
    m = re.search(rf"^ ([0-9a-f]{{64}})\s+\d+ {re.escape(rel)}$", sums, re.M)
    if not m:
        raise SmartOSError(f"Debian {suite}'s Release lists no {rel}")
    data = _get(f"{mirror}/dists/{suite}/{rel}")
    if hashlib.sha256(data).hexdigest() != m.group(1):
        raise SmartOSError(f"{mirror}/dists/{suite}/{rel} does not match its signed Release")
    return lzma.decompress(data).decode()


def pin(minor: str, suite: str, mirror: str, keyring: Path = KEYRING,
        logfile: Path | None = None) -> Runtime:
    """Read the suite's signed package index and pin the runtime's packages for every arch."""
    mirror = mirror.rstrip("/")
    release = _verified_release(mirror, suite, keyring, logfile)
    date = release_date(release)
    debs: list[Deb] = []
    python = ""
    for arch in ARCHES:
        stanzas = {}
        for stanza in _packages_index(mirror, suite, arch, release).split("\n\n"):
            fields = dict(_FIELD.findall(stanza))
            if fields.get("Architecture") in (arch, "all") and "Package" in fields:
                stanzas[fields["Package"]] = fields
        for role, names in (("run", RUN_PACKAGES), ("build", BUILD_PACKAGES)):
            for name in (n.format(v=minor) for n in names):
                found = stanzas.get(name)
                if found is None:
                    raise SmartOSError(f"Debian {suite} has no {name} for {arch}",
                                       hint="pick the suite that carries this Python")
                debs.append(Deb(name, found["Version"], arch, found["Filename"], int(found["Size"]),
                                found["SHA256"], role))
                if name == f"python{minor}-minimal":
                    python = found["Version"].split("-")[0].split("+")[0]
    return Runtime(python, suite, date, tuple(debs))


def release_date(release: str) -> str:
    m = re.search(r"^Date: (.*)$", release, re.M)
    if not m:
        return ""
    return parsedate_to_datetime(m.group(1)).astimezone(UTC).date().isoformat()


def dump(runtimes: Sequence[Runtime], mirror: str) -> str:
    """The pins file's text (TOML; tomllib reads it back)."""
    lines = ["# The Python runtimes SmartOS can put under Home Assistant (image/runtime.py).",
             f"# Written by `smartos pin-runtime` on {datetime.now(UTC).date().isoformat()} from {mirror};",
             "# each suite's InRelease was checked with debian-archive-keyring. Run it again to move on.", ""]
    for rt in runtimes:
        lines += ["[[runtime]]", f'python = "{rt.python}"', f'suite = "{rt.suite}"',
                  f'index_date = "{rt.index_date}"', ""]
        for d in rt.debs:
            lines += ["[[runtime.deb]]", f'package = "{d.package}"', f'version = "{d.version}"',
                      f'arch = "{d.arch}"', f'filename = "{d.filename}"', f"size = {d.size}",
                      f'sha256 = "{d.sha256}"', f'role = "{d.role}"', ""]
    return "\n".join(lines)


def write_pin(new: Runtime, mirror: str, path: Path = PINS) -> None:
    """Put new in the pins file, replacing any runtime of the same minor version."""
    kept = [r for r in (load(path) if path.exists() else []) if r.minor != new.minor]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(dump(sorted([new, *kept], key=lambda r: Version(r.python), reverse=True), mirror))
    tmp.rename(path)
