"""Choosing wheels for a foreign target: which resolved packages need building under emulation."""
# ruff: noqa: E501 -- a pylock.toml as uv writes it, one long line per wheel

from __future__ import annotations

from pathlib import Path

from smartos_image import wheels

PYLOCK = """\
lock-version = "1.0"
created-by = "uv"
requires-python = "==3.13.5"

[[packages]]
name = "aiohttp"
version = "3.13.3"
sdist = { url = "https://f.example/aiohttp-3.13.3.tar.gz", hashes = {sha256 = "aa" } }
wheels = [
  { url = "https://f.example/aiohttp-3.13.3-cp313-cp313-manylinux_2_17_aarch64.manylinux2014_aarch64.whl", hashes = {sha256 = "bb" } },
  { url = "https://f.example/aiohttp-3.13.3-cp313-cp313-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", hashes = {sha256 = "cc" } },
]

[[packages]]
name = "lru-dict"
version = "1.3.0"
sdist = { url = "https://f.example/lru-dict-1.3.0.tar.gz", hashes = {sha256 = "dd" } }
wheels = [
  { url = "https://f.example/lru_dict-1.3.0-cp312-cp312-manylinux_2_17_aarch64.whl", hashes = {sha256 = "ee" } },
  { url = "https://f.example/lru_dict-1.3.0-cp313-cp313-musllinux_1_2_aarch64.whl", hashes = {sha256 = "ff" } },
]

[[packages]]
name = "attrs"
version = "25.4.0"
wheels = [{ url = "https://f.example/attrs-25.4.0-py3-none-any.whl", hashes = {sha256 = "11" } }]

[[packages]]
name = "netifaces"
version = "0.11.0"
sdist = { url = "https://f.example/netifaces-0.11.0.tar.gz", hashes = {sha256 = "22" } }
wheels = [{ url = "https://f.example/netifaces-0.11.0-cp313-cp313-manylinux_2_17_x86_64.whl", hashes = {sha256 = "33" } }]
"""


def test_only_packages_without_a_fitting_wheel_are_built(tmp_path: Path) -> None:
    lock = tmp_path / "pylock.toml"
    lock.write_text(PYLOCK)
    built = wheels.sdist_only(lock, "arm64", "3.13.5")
    # a cp312 or musl wheel does not fit CPython 3.13 on glibc; an x86_64 one not on arm64
    assert [(s.name, s.version) for s in built] == [("lru-dict", "1.3.0"), ("netifaces", "0.11.0")]
    assert built[0].filename == "lru-dict-1.3.0.tar.gz" and built[0].sha256 == "dd"
    assert [s.name for s in wheels.sdist_only(lock, "amd64", "3.13.5")] == ["lru-dict"]


def test_wheelhouse_lookup_matches_name_version_and_platform(tmp_path: Path) -> None:
    tags = wheels.supported_tags("arm64", "3.13.5")
    sdist = wheels.Sdist("lru-dict", "1.3.0", "https://f.example/lru-dict-1.3.0.tar.gz", "dd")
    assert not wheels.have_wheel(tmp_path, sdist, tags)
    (tmp_path / "lru_dict-1.3.0-cp313-cp313-linux_x86_64.whl").touch()
    assert not wheels.have_wheel(tmp_path, sdist, tags)
    (tmp_path / "lru_dict-1.3.0-cp313-cp313-linux_aarch64.whl").touch()
    assert wheels.have_wheel(tmp_path, sdist, tags)
    assert not wheels.have_wheel(tmp_path, wheels.Sdist("lru-dict", "1.4.0", "u", "x"), tags)
