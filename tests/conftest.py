"""Shared fixtures: built images and a booted VM per board, made once per test session.

The system tests run once per board in SMARTOS_TEST_BOARDS (default: x86-64 and rpi4; the rpi4
image boots in QEMU's arm64 virt machine through its own U-Boot script). The Raspberry Pi
structural tests build the boards in SMARTOS_TEST_PI_BOARDS (default: rpi4 and rpi3).
Set SMARTOS_TEST_IMAGE=path/to/smartos-*.img to test an existing image instead of building one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "out" / "test"
VM_BOARDS = os.environ.get("SMARTOS_TEST_BOARDS", "x86-64,rpi4").split(",")
PI_BOARDS = os.environ.get("SMARTOS_TEST_PI_BOARDS", "rpi4,rpi3").split(",")
if os.environ.get("SMARTOS_TEST_IMAGE"):
    VM_BOARDS = [next(b for b in ("x86-64", "rpi4", "rpi3")
                      if f"-{b}.img" in os.environ["SMARTOS_TEST_IMAGE"])]


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "smartos"


def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("building and booting images needs root (chroot, mounts)")


@pytest.fixture(scope="session")
def ssh_key() -> Path:
    """A throwaway key made on this machine (never in the repository), reused across runs so the
    image build's role cache stays valid."""
    key = cache_dir() / "test-key" / "id_ed25519"
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "smartos-test",
                        "-f", str(key)], check=True)
    return key


def smartos(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    cli = Path(sys.executable).parent / "smartos"
    return subprocess.run([str(cli), *args], text=True, capture_output=True, **kw)  # type: ignore[call-overload]


@pytest.fixture(scope="session")
def update_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway update CA and signing key for this session (smartos keys init); the test
    images trust its CA. Made outside the image build's caches (the keyring is written after
    them), so a new one each session costs nothing."""
    keys = tmp_path_factory.mktemp("update-keys") / "keys"
    result = smartos("keys", "init", "--dir", str(keys), "--organization", "SmartOS test")
    assert result.returncode == 0, result.stderr
    return keys


def image_settings(ssh_key: Path, update_keys: Path) -> list[str]:
    """The --set options every test image and release shares."""
    return ["--set", f"admin.ssh_key_files=[{ssh_key}.pub]", "--set", "compress=false",
            "--set", "hostname=smartos-test", "--set", f"update.keyring={update_keys}/ca.cert.pem"]


@pytest.fixture(scope="session")
def image_for(ssh_key: Path, update_keys: Path) -> Callable[[str], Path]:
    """Build a board's test image once per session (raw, uncompressed) and return its path."""
    built: dict[str, Path] = {}

    def build(board: str) -> Path:
        if board not in built:
            needs_root()
            result = smartos("--board", board, *image_settings(ssh_key, update_keys),
                             "--set", f"output_dir={OUT}", "build")
            assert result.returncode == 0, result.stdout + result.stderr
            images = list(OUT.glob(f"smartos-*-{board}.img"))
            assert len(images) == 1, images
            built[board] = images[0]
        return built[board]

    return build


@pytest.fixture(scope="session", params=VM_BOARDS)
def board(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def built_image(board: str, image_for: Callable[[str], Path]) -> Path:
    if os.environ.get("SMARTOS_TEST_IMAGE"):
        return Path(os.environ["SMARTOS_TEST_IMAGE"])
    return image_for(board)


@pytest.fixture(scope="session")
def release_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the tests publish releases (smartos release --to)."""
    return tmp_path_factory.mktemp("releases")


@pytest.fixture(scope="session")
def release_server(release_tree: Path) -> Iterator[object]:
    """The release tree over HTTP on 127.0.0.1 (with Range requests, as RAUC streaming needs);
    VMs reach it as http://10.0.2.100:8080."""
    from tests.system.release_server import ReleaseServer

    with ReleaseServer(release_tree) as server:
        yield server


UPDATE_URL = "http://10.0.2.100:8080"


@pytest.fixture(scope="session")
def vm(built_image: Path, release_server: object,
       tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    needs_root()
    from smartos_image.vm import Machine

    machine = Machine(built_image, tmp_path_factory.mktemp("vm"), ssh_port=2222, http_port=8123,
                      restrict=True, disk_size="8G",
                      guest_forwards=((8080, release_server.port),))  # type: ignore[attr-defined]
    machine.start()
    try:
        machine.wait_for_port(2222, 420)
        yield machine
    finally:
        machine.stop()
        for hang in machine.hangs:  # shown in pytest's warnings summary
            warnings.warn(f"{built_image.name}: QEMU reset by the firmware-hang guard: {hang}", stacklevel=1)


@pytest.fixture(scope="session")
def host(vm: object, ssh_key: Path) -> object:
    import testinfra

    return testinfra.get_host(
        "ssh://admin@127.0.0.1:2222", ssh_identity_file=str(ssh_key),
        ssh_extra_args="-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR")


@pytest.fixture(scope="session")
def ha_ready(vm: object) -> float:
    """Seconds until Home Assistant answered 200 (TCG is slow: a generous limit)."""
    return vm.wait_for_http("http://127.0.0.1:8123/manifest.json", 900)  # type: ignore[attr-defined]
