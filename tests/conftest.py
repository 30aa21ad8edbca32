"""Shared fixtures: built images and a booted VM per board, made once per test session.

The system tests run once per board in SMARTOS_TEST_BOARDS (default: x86-64 and rpi4; the rpi4
image boots in QEMU's arm64 virt machine through its own U-Boot script). The Raspberry Pi
structural tests build the boards in SMARTOS_TEST_PI_BOARDS (default: rpi4 and rpi3).
Set SMARTOS_TEST_IMAGE=path/to/smartos-*.img to test an existing image instead of building one.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.system.releases import Releases

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
    key.parent.mkdir(parents=True, exist_ok=True)
    with (key.parent / ".lock").open("a") as lock:  # pytest-xdist's workers ask at once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not key.exists():
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


# The test images' Home Assistant: the last release for trixie's own Python 3.13, where the
# update from a field box starts. `latest` (on the pinned Python 3.14) is built and booted by
# test_python_runtime.py.
HOMEASSISTANT = "2026.2.3"


def image_settings(ssh_key: Path, update_keys: Path) -> list[str]:
    """The --set options every test image and release shares."""
    return ["--set", f"admin.ssh_key_files=[{ssh_key}.pub]", "--set", "compress=false",
            "--set", "hostname=smartos-test", "--set", f"update.keyring={update_keys}/ca.cert.pem",
            "--set", f"homeassistant.version={HOMEASSISTANT}"]


class Images:
    """The test images, each built once per session (raw, uncompressed). `prefetch` builds some
    in the background, one after another, while other tests run: the Raspberry Pi images build
    while the x86-64 VM tests run (a TCG machine and qemu-user's emulated dpkg share the two
    cores better than either uses them alone). A build takes the cache's lock, so builds never
    overlap each other."""

    def __init__(self, ssh_key: Path, update_keys: Path) -> None:
        self.settings = image_settings(ssh_key, update_keys)
        self.futures: dict[str, Future[Path]] = {}
        self.lock = threading.Lock()
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="image-build")

    def _build(self, board: str) -> Path:
        needs_root()
        result = smartos("--board", board, *self.settings, "--set", f"output_dir={OUT}", "build")
        assert result.returncode == 0, result.stdout + result.stderr
        images = list(OUT.glob(f"smartos-*-{board}.img"))
        assert len(images) == 1, images
        return images[0]

    def __call__(self, board: str) -> Path:
        with self.lock:
            future = self.futures.get(board)
            mine = future is None
            if future is None:
                future = self.futures[board] = Future()
        if mine:
            try:
                future.set_result(self._build(board))
            except BaseException as exc:  # a failed assertion or pytest's skip, for every waiter
                future.set_exception(exc)
        return future.result()

    def prefetch(self, boards: list[str]) -> None:
        with self.lock:
            for board in boards:
                if board not in self.futures:
                    self.futures[board] = self.pool.submit(self._build, board)

    def submit(self, build: Callable[[], Path]) -> Future[Path]:
        """Another build (a release) in the same pool: after the images already asked for."""
        return self.pool.submit(build)


@pytest.fixture(scope="session")
def image_for(ssh_key: Path, update_keys: Path) -> Iterator[Images]:
    """Build a board's test image once per session (raw, uncompressed) and return its path."""
    images = Images(ssh_key, update_keys)
    yield images
    images.pool.shutdown(wait=True, cancel_futures=True)


NEEDED_BOARDS: set[str] = set()  # the boards whose images the collected tests use
XDIST = bool(os.environ.get("PYTEST_XDIST_WORKER"))  # another worker builds the other boards' images
RELEASES_NEEDED: set[str] = set()  # the boards whose update flow (releases) the collected tests run


ONE_BOARD = ("board-independent (the same units, overlays and Python code on every board): runs on "
             "the x86-64 VM; the rpi4 VM runs the tests marked every_board")


BESIDE_THE_VM = ("tests/image/test_pi_image.py", "tests/image/test_build_failures.py",
                 "tests/system/test_python_runtime.py")
RUNTIME_VM_TESTS = "tests/system/test_python_runtime.py"


def xdist_group(nodeid: str) -> str:
    """Which of pytest-xdist's workers runs a test (./build.py test runs two, one per core): the
    x86-64 VM's tests on one, from its image build on; the unit tests, then the builds that
    must fail, the Raspberry Pi images and the rpi4 VM on the other, beside them. Each group
    keeps its order; the image cache's lock keeps builds one at a time."""
    if nodeid.startswith(BESIDE_THE_VM):  # (the runtime image's VM comes after the rpi4 VM's tests)
        return "images-and-rpi4-vm"
    if nodeid.startswith("tests/system/"):  # every test there is parametrized by the VM's board
        return "x86-64-vm" if "x86-64" in nodeid.rpartition("[")[2] else "images-and-rpi4-vm"
    return "unit"


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Whole groups (xdist_group) to a worker, in the collection's order (the x86-64 VM's first:
    see pytest_collection_modifyitems), instead of single tests to whichever worker is free."""
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ByGroup(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return xdist_group(nodeid)

    config.option.loadscopereorder = False
    return ByGroup(config, log)


def vm_board(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("board") if callspec and item.get_closest_marker("vm") else None


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """VM tests run on the x86-64 VM; on the rpi4 VM (arm64 under TCG, several times slower) only
    those marked every_board: what differs between the boards (boot loader and slot switching,
    the architecture's binaries and Home Assistant's venv, the data partition, the radios' rules).
    Under pytest-xdist the x86-64 VM's tests run beside everything else (xdist_group). In one
    process, the Pi images' structural tests run after the x86-64 VM tests, while which the Pi
    images are built in the background (see Images); the rpi4 VM tests come last."""
    for item in items:
        board = vm_board(item)
        if board not in (None, "x86-64") and not item.get_closest_marker("every_board"):
            item.add_marker(pytest.mark.skip(reason=ONE_BOARD))
    # its own VM: last, once the rpi4 VM's tests are done (on that worker under xdist)
    items.sort(key=lambda item: item.nodeid.startswith(RUNTIME_VM_TESTS))
    pi = [item for item in items if item.nodeid.startswith("tests/image/test_pi_image.py")]
    boards = {board for board in map(vm_board, items) if board}
    RELEASES_NEEDED.update(board for item in items if "publish" in getattr(item, "fixturenames", ())
                           and not item.get_closest_marker("skip") and (board := vm_board(item)))
    NEEDED_BOARDS.update(boards | (set(PI_BOARDS) if pi else set()))
    if not pi or "x86-64" not in boards:
        return
    rest = [item for item in items if item not in pi]
    first_pi_vm = next((n for n, item in enumerate(rest) if vm_board(item) not in (None, "x86-64")),
                       len(rest))
    items[:] = rest[:first_pi_vm] + pi + rest[first_pi_vm:]
    if XDIST:  # the x86-64 VM's group first: its worker starts its image build at once
        items.sort(key=lambda item: xdist_group(item.nodeid) != "x86-64-vm")


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
# The host ports each board's VM forwards ssh and Home Assistant to: under pytest-xdist
# (./build.py test) the x86-64 and rpi4 VMs run side by side.
PORTS = {"x86-64": (2222, 8123), "rpi4": (2232, 8133), "rpi3": (2242, 8143),
         "x86-64-runtime": (2252, 8153)}  # tests/system/test_python_runtime.py


def ha_url(vm: Any, path: str = "/manifest.json") -> str:
    """Home Assistant of the VM, as the host reaches it."""
    return f"http://127.0.0.1:{vm.http_port}{path}"


def ssh_to(vm: Any, ssh_key: Path) -> list[str]:
    """A plain ssh to the VM's admin (beside testinfra's: for stdin, and across reboots), which
    gives up when the VM goes away under it."""
    return ["ssh", "-i", str(ssh_key), "-p", str(vm.ssh_port), "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10",
            "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3", "admin@127.0.0.1"]


@pytest.fixture(scope="session")
def vm(built_image: Path, release_server: object, board: str, image_for: Images,
       releases: Releases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    needs_root()
    from smartos_image.vm import Machine

    ssh_port, http_port = PORTS[board]
    machine = Machine(built_image, tmp_path_factory.mktemp("vm"), ssh_port=ssh_port, http_port=http_port,
                      restrict=True, disk_size="8G",
                      guest_forwards=((8080, release_server.port),))  # type: ignore[attr-defined]
    machine.start()
    if board == "x86-64" and not os.environ.get("SMARTOS_TEST_IMAGE") and not XDIST:
        image_for.prefetch(sorted(NEEDED_BOARDS - {"x86-64"}))  # build while this VM's tests run
    if board in RELEASES_NEEDED:
        releases.prefetch()  # then the update tests' releases
    try:
        machine.wait_for_port(ssh_port, 420)
        yield machine
    finally:
        machine.stop()
        for hang in machine.hangs:  # shown in pytest's warnings summary
            warnings.warn(f"{built_image.name}: QEMU reset by the firmware-hang guard: {hang}", stacklevel=1)


@pytest.fixture(scope="session")
def releases(board: str, ssh_key: Path, update_keys: Path, image_for: Images,
             tmp_path_factory: pytest.TempPathFactory) -> Releases:
    """The update tests' releases of this board's test image (tests/system/releases.py)."""
    return Releases(board, image_settings(ssh_key, update_keys), update_keys,
                    tmp_path_factory.mktemp(f"releases-{board}"), image_for.submit, smartos)


@pytest.fixture(scope="session")
def host(vm: object, ssh_key: Path) -> object:
    import testinfra

    return testinfra.get_host(
        f"ssh://admin@127.0.0.1:{vm.ssh_port}", ssh_identity_file=str(ssh_key),  # type: ignore[attr-defined]
        ssh_extra_args="-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR")


@pytest.fixture(scope="session")
def ha_ready(vm: object) -> float:
    """Seconds until Home Assistant answered 200 (TCG is slow: a generous limit)."""
    return vm.wait_for_http(ha_url(vm), 900)  # type: ignore[attr-defined]
