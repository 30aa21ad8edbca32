"""A failed or interrupted build leaves nothing under a final name and nothing mounted."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import cache_dir, needs_root, smartos

pytestmark = pytest.mark.image


def mounts_below(path: Path) -> list[str]:
    with open("/proc/self/mounts") as fh:
        return [ln.split()[1] for ln in fh if ln.split()[1].startswith(str(path))]


def test_unreachable_mirror_is_named_and_leaves_no_image(tmp_path: Path) -> None:
    needs_root()
    result = smartos("--set", "debian.mirror=http://127.0.0.1:9/debian",
                     "--set", f"output_dir={tmp_path}", "build")
    assert result.returncode == 2
    assert "debian.mirror: cannot reach http://127.0.0.1:9/debian" in result.stderr
    assert not list(tmp_path.glob("smartos-*"))
    assert not list(tmp_path.glob(".*.tmp"))


def test_interrupted_build_leaves_no_mounts_and_no_image(tmp_path: Path, ssh_key: Path) -> None:
    """Ctrl-C in the middle of the roles stage, which runs with /proc, /sys, /dev mounted."""
    needs_root()
    cli = Path(sys.executable).parent / "smartos"
    # A hostname no other test uses forces the roles stage to run (not come from the cache).
    proc = subprocess.Popen([str(cli), "--set", f"output_dir={tmp_path}", "--set",
                             f"hostname=interrupt-{os.getpid()}", "--set",
                             f"admin.ssh_key_files=[{ssh_key}.pub]", "build"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            # as from a terminal, also when the tests run as a background job
                            # (which starts children with SIGINT ignored)
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    # Its own roles stage first: before it, the build may wait for the cache's lock while another
    # build (another pytest-xdist worker's) mounts its own trees; a build holds the lock throughout.
    lines: list[str] = []

    def read() -> None:
        for line in proc.stdout or ():
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + 1200
    while time.monotonic() < deadline and proc.poll() is None:
        if any("Apply Ansible roles" in line for line in lines) and mounts_below(cache_dir() / "configured"):
            break
        time.sleep(0.2)
    time.sleep(2)
    # The lock is this build's now: every mount below the cache is its own. Their trees (its
    # roles' chroot, its work directory) are what must be unmounted; once it exits, another
    # worker's build may mount its own.
    trees = {Path(*Path(m).relative_to(cache_dir()).parts[:2]) for m in mounts_below(cache_dir())}
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    reader.join(timeout=10)
    seen = "".join(lines)
    assert proc.returncode == 130, seen
    assert "interrupted" in seen
    assert any(tree.parts[0] == "configured" for tree in trees), trees
    assert [m for tree in trees for m in mounts_below(cache_dir() / tree)] == []
    assert not list(tmp_path.glob("smartos-*"))
    assert not list(tmp_path.glob(".*.tmp"))
