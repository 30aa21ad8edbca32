"""An x86-64 image whose Home Assistant needs a newer Python than Debian trixie's: it runs on the
runtime pinned from Debian forky (image/runtime.py), booted in QEMU with no internet.

The image is built with `homeassistant.version: latest`: the newest stable release that a pinned
runtime can run and whose requirements resolve on PyPI (on 2026-12-03 that was 2026.10.4:
2026.11.0 pins universal-silabs-flasher 1.3.0, which PyPI does not have, and is passed over).
It is built and booted on the worker of the Raspberry Pi images, after the rpi4 VM's tests.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.version import Version

from tests.conftest import PORTS, image_settings, needs_root, smartos

pytestmark = [pytest.mark.vm]

RELEASE = "latest"  # the newest release PyPI can install, on the pinned runtime
SSH_PORT, HTTP_PORT = PORTS["x86-64-runtime"]
PREFIX = "/opt/smartos/python3.14"


@pytest.fixture(scope="module")
def runtime_image(ssh_key: Path, update_keys: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    needs_root()
    out = tmp_path_factory.mktemp("runtime-image")
    result = smartos("--board", "x86-64", *image_settings(ssh_key, update_keys),
                     "--set", f"homeassistant.version={RELEASE}", "--set", f"output_dir={out}", "build")
    assert result.returncode == 0, result.stdout + result.stderr
    said = result.stdout + result.stderr
    resolved = re.search(r"Home Assistant (\S+) on Python 3\.14", said)
    assert resolved, said
    print(f"latest: Home Assistant {resolved[1]}; "
          + "; ".join(re.findall(r"passed over Home Assistant ([^\n]+)", said)))
    return next(out.glob("smartos-*-x86-64.img"))


@pytest.fixture(scope="module")
def runtime_vm(runtime_image: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from smartos_image.vm import Machine

    machine = Machine(runtime_image, tmp_path_factory.mktemp("runtime-vm"), ssh_port=SSH_PORT,
                      http_port=HTTP_PORT, restrict=True, disk_size="8G")
    machine.start()
    try:
        machine.wait_for_port(SSH_PORT, 420)
        yield machine
    finally:
        machine.stop()


@pytest.fixture(scope="module")
def runtime_host(runtime_vm: object, ssh_key: Path) -> object:
    import testinfra

    return testinfra.get_host(
        f"ssh://admin@127.0.0.1:{SSH_PORT}", ssh_identity_file=str(ssh_key),
        ssh_extra_args="-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR")


def test_the_manifest_names_the_runtime_and_where_it_comes_from(runtime_image: Path) -> None:
    manifest = json.loads(runtime_image.with_suffix(".manifest.json").read_text())
    assert Version(manifest["homeassistant"]) >= Version("2026.3.0")  # needs Python >= 3.14.2
    assert manifest["python"].startswith("3.13.")  # the system's own, for smartosctl
    origin = manifest["python_runtime"]
    assert origin["python"].startswith("3.14.") and origin["debian_suite"] == "forky"
    assert origin["prefix"] == PREFIX
    assert {p["name"] for p in origin["packages"]} == {
        "python3.14-minimal", "libpython3.14-minimal", "libpython3.14-stdlib", "libc6"}


def test_home_assistant_on_python_3_14_answers_offline(runtime_vm: object, runtime_host) -> None:
    runtime_vm.wait_for_http(f"http://127.0.0.1:{HTTP_PORT}/manifest.json", 900)  # type: ignore[attr-defined]
    with urllib.request.urlopen(f"http://127.0.0.1:{HTTP_PORT}/api/onboarding", timeout=30) as resp:
        assert {"step": "user", "done": False} in json.load(resp)
    log = runtime_host.check_output("sudo journalctl -u smartos.service -b --no-pager")
    assert "Attempting install of" not in log
    assert "Unable to install package" not in log
    pid = runtime_host.check_output("systemctl show -p MainPID --value smartos.service")
    exe = runtime_host.check_output(f"sudo readlink /proc/{pid}/exe")
    assert exe == f"{PREFIX}/usr/bin/python3.14"
    maps = runtime_host.check_output(f"sudo cat /proc/{pid}/maps")
    assert f"{PREFIX}/usr/lib/x86_64-linux-gnu/libc.so.6" in maps  # its own C library ...
    assert "/usr/lib/x86_64-linux-gnu/libssl.so.3" in maps  # ... and trixie's OpenSSL


def test_the_rest_of_the_system_keeps_trixies_python_and_libc(runtime_host) -> None:
    assert runtime_host.check_output("python3 -c 'import sys; print(sys.version_info[:2])'") == "(3, 13)"
    assert "2.41" in runtime_host.check_output("ldd --version | head -1")
    assert runtime_host.run("smartosctl status").rc == 0
    # the venv's Python is the runtime, and Debian's sitecustomize (/etc) is not on its path
    out = runtime_host.check_output("/opt/smartos/venv/bin/python -c 'import sys, ssl; "
                                    "print(sys.version.split()[0], sys.base_prefix, ssl.OPENSSL_VERSION)'")
    version, base, *openssl = out.split()
    assert version.startswith("3.14.") and base == f"{PREFIX}/usr" and openssl[0] == "OpenSSL"
    assert runtime_host.run(f"test -e {PREFIX}/usr/lib/python3.14/sitecustomize.py").rc != 0


def test_every_file_of_the_runtime_is_roots_and_read_only(runtime_host) -> None:
    not_roots = r"\( ! -user root -o -perm -o+w -o -perm -g+w \) ! -type l"
    writable = runtime_host.check_output(f"sudo find {PREFIX} {not_roots} -print -quit")
    assert writable == ""
    assert runtime_host.run(f"sudo -u homeassistant touch {PREFIX}/usr/lib/python3.14/x.py").rc != 0
