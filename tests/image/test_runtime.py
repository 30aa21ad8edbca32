"""The Python runtime under Home Assistant (image/runtime.py): which Python a release runs on,
the pins, and the downloads checked against them.

Pinning and fetching run against a Debian-shaped mirror served on 127.0.0.1 from a temporary
directory, with an InRelease signed by a key made for the test: the same gpgv check, the same
hashes, no network. That the pinned runtime really starts on a Debian trixie system is checked on
the built images.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import lzma
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from smartos_image import runtime
from smartos_image.errors import SmartOSError

# Requires-Python as Home Assistant's wheels on PyPI declare it.
REQUIRES = {"2025.12.5": ">=3.13.2", "2026.2.3": ">=3.13.2", "2026.3.0": ">=3.14.2", "2026.11.0": ">=3.14.2"}
TRIXIE_PYTHON = "3.13.5"


def test_the_shipped_pins_cover_both_architectures() -> None:
    runtimes = runtime.load()
    assert runtimes, "image/data/python-runtimes.toml pins no runtime"
    for rt in runtimes:
        for arch in runtime.ARCHES:
            names = {d.package for d in rt.packages(arch)}
            assert names == {n.format(v=rt.minor) for n in runtime.RUN_PACKAGES}, arch
            assert {d.package for d in rt.packages(arch, "build")} == {f"libpython{rt.minor}-dev"}
        for deb in rt.debs:
            assert len(deb.sha256) == 64 and int(deb.sha256, 16) >= 0
            assert deb.filename.startswith("pool/main/") and deb.filename.endswith(f"_{deb.arch}.deb") \
                or deb.filename.endswith("_all.deb")


@pytest.mark.parametrize("release", ["2025.12.5", "2026.2.3"])
def test_a_release_trixie_can_run_gets_the_suites_own_python(release: str) -> None:
    choice = runtime.choose(REQUIRES[release], "trixie", TRIXIE_PYTHON, runtime.load())
    assert choice.runtime is None and choice.python == TRIXIE_PYTHON
    assert choice.reason == "Debian trixie's python3 3.13.5 meets Requires-Python >=3.13.2"


@pytest.mark.parametrize("release", ["2026.3.0", "2026.11.0"])
def test_a_release_that_needs_python_3_14_gets_the_pinned_runtime(release: str) -> None:
    choice = runtime.choose(REQUIRES[release], "trixie", TRIXIE_PYTHON, runtime.load())
    assert choice.runtime is not None and choice.python.startswith("3.14.")
    assert choice.runtime.prefix == "/opt/smartos/python3.14"
    assert choice.runtime.interpreter == "/opt/smartos/python3.14/usr/bin/python3.14"
    assert "Debian trixie has Python 3.13.5, Requires-Python is >=3.14.2" in choice.reason


def test_the_newest_fitting_runtime_wins_and_none_fitting_is_an_error() -> None:
    older = runtime.Runtime("3.14.2", "forky", "2026-01-01")
    newer = runtime.Runtime("3.15.1", "sid", "2027-06-01")
    assert runtime.choose(">=3.14.2", "trixie", TRIXIE_PYTHON, [newer, older]).runtime == newer
    assert runtime.choose(">=3.14.2,<3.15", "trixie", TRIXIE_PYTHON, [newer, older]).runtime == older
    with pytest.raises(SmartOSError, match=r"Requires-Python >=3\.16: Debian trixie has 3\.13\.5, "
                                           r"pinned runtimes: 3\.15\.1, 3\.14\.2") as err:
        runtime.choose(">=3.16", "trixie", TRIXIE_PYTHON, [newer, older])
    assert "smartos pin-runtime" in (err.value.hint or "")


def _table(*versions_and_requires: tuple[str, str]) -> dict:
    return {"base": "https://pypi.example/pypi/homeassistant/json", "releases": {
        v: [{"packagetype": "bdist_wheel", "requires_python": r, "yanked": False,
             "url": f"../../packages/homeassistant-{v}.whl", "digests": {"sha256": "ab" * 32}}]
        for v, r in versions_and_requires}}


PYPI_TABLE = _table(("2026.2.3", ">=3.13.2"), ("2026.10.4", ">=3.14.2"), ("2026.11.0", ">=3.14.2"))


def test_latest_passes_over_a_release_whose_requirements_do_not_resolve(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The resolver is a parameter here (its real one, uv against PyPI, runs in the image and VM
    tests); this is what select does with its answers."""
    monkeypatch.setattr(runtime.hass, "releases", lambda cache: PYPI_TABLE)
    asked: list[tuple[str, str]] = []

    def resolver(release, choice):  # type: ignore[no-untyped-def]
        asked.append((release.version, choice.python))
        return "universal-silabs-flasher==1.3.0 was not found" if release.version == "2026.11.0" else ""

    release, choice = runtime.select(tmp_path, "trixie", TRIXIE_PYTHON, "latest", installable=resolver)
    assert release.version == "2026.10.4" and choice.python.startswith("3.14.")
    assert choice.skipped == ("2026.11.0: universal-silabs-flasher==1.3.0 was not found",)
    assert [v for v, _ in asked] == ["2026.11.0", "2026.10.4"]

    asked.clear()
    release, choice = runtime.select(tmp_path, "trixie", TRIXIE_PYTHON, "2026.11.0", installable=resolver)
    assert release.version == "2026.11.0" and asked == []  # asked for by name: taken as it is

    with pytest.raises(SmartOSError, match=r"2026\.11\.0: nope; 2026\.10\.4: nope; 2026\.2\.3: nope"):
        runtime.select(tmp_path, "trixie", TRIXIE_PYTHON, "latest", installable=lambda r, c: "nope")


def test_latest_without_a_runtime_stays_on_the_suites_python(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(runtime.hass, "releases", lambda cache: PYPI_TABLE)
    release, choice = runtime.select(tmp_path, "trixie", TRIXIE_PYTHON, "latest", runtimes=[])
    assert release.version == "2026.2.3" and choice.runtime is None


# -- a mirror on loopback -------------------------------------------------------------------------

def make_deb(tmp: Path, package: str, arch: str, version: str = "3.14.8-1") -> Path:
    """A real (tiny) .deb, so dpkg-deb can unpack what fetch returns."""
    root = tmp / f"{package}-{arch}"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN/control").write_text(f"Package: {package}\nVersion: {version}\nArchitecture: {arch}\n"
                                         "Maintainer: test <t@example.org>\nDescription: test\n")
    (root / f"usr/share/doc/{package}").mkdir(parents=True)
    (root / f"usr/share/doc/{package}/copyright").write_text("licence\n")
    (root / f"usr/share/doc/{package}/changelog.gz").write_bytes(b"x")
    (root / "usr/share/man/man1").mkdir(parents=True)
    (root / "usr/share/man/man1/x.1.gz").write_bytes(b"x")
    (root / "usr/lib/python3.14").mkdir(parents=True)
    (root / "usr/lib/python3.14" / f"{package}.py").write_text("")
    os.symlink("/etc/python3.14/sitecustomize.py", root / "usr/lib/python3.14/sitecustomize.py")
    out = tmp / f"{package}_{version}_{arch}.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", root, out], check=True,
                   capture_output=True)
    return out


PACKAGES = [n.format(v="3.14") for n in (*runtime.RUN_PACKAGES, *runtime.BUILD_PACKAGES)]


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, Path]]:
    """(URL, its directory, the keyring that signs its InRelease)."""
    tmp = tmp_path_factory.mktemp("mirror")
    top = tmp / "debian"
    gnupg = tmp / "gnupg"
    gnupg.mkdir(mode=0o700)
    gpg = ["gpg", "--homedir", str(gnupg), "--batch", "--quiet", "--pinentry-mode", "loopback",
           "--passphrase", ""]
    subprocess.run([*gpg, "--quick-gen-key", "Test Archive <archive@example.org>", "ed25519", "sign",
                    "1d"], check=True)
    keyring = tmp / "archive.gpg"
    keyring.write_bytes(subprocess.run([*gpg, "--export"], check=True, capture_output=True).stdout)
    sums = []
    for arch in runtime.ARCHES:
        stanzas = []
        for package in PACKAGES:
            version = "2.43-7" if package == "libc6" else "3.14.8-1"
            deb = make_deb(tmp, package, arch, version)
            pool = f"pool/main/p/python3.14/{deb.name}"
            (top / pool).parent.mkdir(parents=True, exist_ok=True)
            (top / pool).write_bytes(deb.read_bytes())
            data = deb.read_bytes()
            stanzas.append(f"Package: {package}\nVersion: {version}\nArchitecture: {arch}\n"
                           f"Filename: {pool}\nSize: {len(data)}\n"
                           f"SHA256: {hashlib.sha256(data).hexdigest()}\n")
        index = lzma.compress("\n".join(stanzas).encode())
        rel = f"main/binary-{arch}/Packages.xz"
        (top / "dists/forky" / rel).parent.mkdir(parents=True)
        (top / "dists/forky" / rel).write_bytes(index)
        sums.append(f" {hashlib.sha256(index).hexdigest()} {len(index)} {rel}")
    release = top / "dists/forky/Release"
    release.write_text("Suite: testing\nCodename: forky\nDate: Fri, 30 Oct 2026 08:08:01 UTC\n"
                       "SHA256:\n" + "\n".join(sums) + "\n")
    subprocess.run([*gpg, "--clearsign", "--output", str(release.with_name("InRelease")), str(release)],
                   check=True)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp))
    handler.log_message = lambda *a, **k: None  # type: ignore[assignment]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/debian", top, keyring
    httpd.shutdown()


def test_pin_reads_the_signed_index(mirror: tuple[str, Path, Path], tmp_path: Path) -> None:
    url, top, keyring = mirror
    pinned = runtime.pin("3.14", "forky", url, keyring=keyring)
    assert pinned.python == "3.14.8" and pinned.suite == "forky" and pinned.index_date == "2026-10-30"
    assert len(pinned.debs) == len(PACKAGES) * len(runtime.ARCHES)
    libc = next(d for d in pinned.debs if d.package == "libc6" and d.arch == "arm64")
    assert libc.version == "2.43-7"
    assert libc.sha256 == hashlib.sha256((top / libc.filename).read_bytes()).hexdigest()
    pins = tmp_path / "pins.toml"
    runtime.write_pin(pinned, url, pins)
    assert runtime.load(pins) == [pinned]


def test_pin_refuses_an_index_signed_by_another_key(mirror: tuple[str, Path, Path], tmp_path: Path) -> None:
    url, _, _ = mirror
    with pytest.raises(SmartOSError, match="gpgv"):
        runtime.pin("3.14", "forky", url, keyring=runtime.KEYRING)


def test_pin_refuses_a_package_index_that_does_not_match_the_release(
        mirror: tuple[str, Path, Path], tmp_path: Path) -> None:
    url, top, keyring = mirror
    index = top / "dists/forky/main/binary-amd64/Packages.xz"
    good = index.read_bytes()
    index.write_bytes(lzma.compress(b"Package: python3.14-minimal\nVersion: 9.9\n"))
    try:
        with pytest.raises(SmartOSError, match="does not match its signed Release"):
            runtime.pin("3.14", "forky", url, keyring=keyring)
    finally:
        index.write_bytes(good)


def test_fetch_checks_each_file_and_then_uses_the_cache(mirror: tuple[str, Path, Path],
                                                        tmp_path: Path) -> None:
    url, top, keyring = mirror
    pinned = runtime.pin("3.14", "forky", url, keyring=keyring)
    debs = runtime.fetch(pinned, "arm64", url, tmp_path)
    assert [p.name.split("_")[0] for p in debs] == [n.format(v="3.14") for n in runtime.RUN_PACKAGES]
    assert all(p.parent == tmp_path / "debs/runtime-forky-arm64" for p in debs)
    # offline now: the cached, checked files are used
    again = runtime.fetch(pinned, "arm64", "http://127.0.0.1:9/debian", tmp_path)
    assert again == debs
    dest = tmp_path / "prefix"
    runtime.unpack(pinned, "arm64", debs, dest)
    assert (dest / "usr/lib/python3.14/libc6.py").exists()
    assert (dest / "usr/share/doc/libc6/copyright").exists()
    assert not (dest / "usr/share/doc/libc6/changelog.gz").exists()
    assert not (dest / "usr/share/man").exists()
    assert not (dest / "usr/lib/python3.14/sitecustomize.py").is_symlink()


def with_one_deb(mirror: tuple[str, Path, Path], index: int, **changes: object) -> runtime.Runtime:
    """The mirror's pinned runtime reduced to its index-th amd64 package, changed as given."""
    url, _, keyring = mirror
    pinned = runtime.pin("3.14", "forky", url, keyring=keyring)
    deb = dataclasses.replace(pinned.packages("amd64")[index], **changes)  # type: ignore[arg-type]
    return dataclasses.replace(pinned, debs=(deb,))


def test_fetch_refuses_other_bytes_and_leaves_nothing(mirror: tuple[str, Path, Path],
                                                      tmp_path: Path) -> None:
    forged = with_one_deb(mirror, 0, sha256="0" * 64)
    with pytest.raises(SmartOSError, match="is not the pinned 0000"):
        runtime.fetch(forged, "amd64", mirror[0], tmp_path)
    assert list((tmp_path / "debs/runtime-forky-amd64").iterdir()) == []


def test_a_pinned_package_gone_from_the_mirror_is_named(mirror: tuple[str, Path, Path],
                                                        tmp_path: Path) -> None:
    gone = with_one_deb(mirror, 1, version="3.14.7-1", filename="pool/main/p/python3.14/gone.deb")
    gone_from = r"libpython3\.14-minimal 3\.14\.7-1 \(amd64\) is gone from"
    with pytest.raises(SmartOSError, match=gone_from) as err:
        runtime.fetch(gone, "amd64", mirror[0], tmp_path)
    assert "smartos pin-runtime 3.14 --suite forky" in (err.value.hint or "")


def test_the_interpreter_is_pointed_at_the_prefix_loader_and_libc() -> None:
    rt = runtime.load()[0]
    args = runtime.patchelf_args(rt, "arm64", "/build/runtime/usr/bin/python3.14")
    libs = "/opt/smartos/python3.14/usr/lib/aarch64-linux-gnu"
    assert args == ["--no-sort", "--set-interpreter", f"{libs}/ld-linux-aarch64.so.1", "--force-rpath",
                    "--set-rpath", libs, "/build/runtime/usr/bin/python3.14"]
    assert runtime.build_env(rt)["CPPFLAGS"] == "-I/opt/smartos/python3.14/usr/include"


def test_a_cross_tree_gets_the_targets_pyconfig_and_sysconfig_data(tmp_path: Path) -> None:
    rt = runtime.load()[0]
    foreign, tree = tmp_path / "arm64", tmp_path / "amd64"
    (foreign / "usr/include/aarch64-linux-gnu/python3.14").mkdir(parents=True)
    (foreign / "usr/include/aarch64-linux-gnu/python3.14/pyconfig.h").write_text("#define ARM 1\n")
    (foreign / "usr/lib/python3.14").mkdir(parents=True)
    (foreign / "usr/lib/python3.14/_sysconfigdata__linux_aarch64-linux-gnu.py").write_text("build = {}\n")
    (foreign / "usr/lib/python3.14/os.py").write_text("# arm64's\n")
    (tree / "usr/lib/python3.14").mkdir(parents=True)
    (tree / "usr/lib/python3.14/os.py").write_text("# amd64's\n")
    runtime.add_cross_settings(rt, "arm64", foreign, tree)
    assert (tree / "usr/include/aarch64-linux-gnu/python3.14/pyconfig.h").read_text() == "#define ARM 1\n"
    assert (tree / "usr/lib/python3.14/_sysconfigdata__linux_aarch64-linux-gnu.py").exists()
    assert (tree / "usr/lib/python3.14/os.py").read_text() == "# amd64's\n"
