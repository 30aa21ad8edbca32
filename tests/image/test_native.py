"""Native tools lent to a foreign-architecture tree (image/native.py): which files are overlaid,
that the overlay is read-only, and that unmounting leaves the tree exactly as it was.

The mount tests use small stand-in trees (host files) rather than an arm64 tree: what they check
(which path shows which bytes, what can be written, what is left behind) does not depend on the
architecture. That an arm64 image ends up with only arm64 programs is checked on the built images
(tests/image/test_pi_image.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from smartos_image import host, native

ALWAYS_THE_TARGETS = ("kmod", "modprobe", "busybox", "udevadm", "e2fsck", "uname", "dpkg", "ldconfig",
                      "ldd", "perl", "python3")


def test_nothing_an_initramfs_copies_or_that_answers_per_architecture_is_overlaid() -> None:
    names = {Path(rel).name for rel in native.OVERLAID}
    assert not names & set(ALWAYS_THE_TARGETS)
    assert "depmod" not in names and native.PATH_ONLY == {"depmod": "usr/bin/kmod"}
    assert {"dash", "sed", "dpkg-deb", "cp"} <= names


def test_only_emulated_trees_get_a_cpu_setting() -> None:
    assert host.emulation_env(host.native_arch()) == {}
    foreign = "arm64" if host.native_arch() == "amd64" else "amd64"
    if foreign in host.EMULATED_CPU:
        assert host.emulation_env(foreign) == {"QEMU_CPU": host.EMULATED_CPU[foreign]}


def stand_in_trees(tmp_path: Path) -> tuple[Path, Path]:
    builder, root = tmp_path / "builder", tmp_path / "root"
    tools = builder / native.TOOLS_DIR
    tools.mkdir(parents=True)
    for name in ("sed", "grep", "dash", "dpkg-deb"):
        (tools / name).write_text(f"native {name}\n")
    (root / "usr/bin").mkdir(parents=True)
    (root / "run").mkdir()
    (root / "usr/bin/sed").write_text("target sed\n")
    (root / "usr/bin/grep").write_text("target grep\n")
    (root / "usr/bin/dash").write_text("target dash\n")
    (root / "usr/bin/cp").write_text("target cp\n")  # no native copy: stays the target's
    os.symlink("sed", root / "usr/bin/dpkg-deb")  # a symlink is never mounted over
    return builder, root


def test_overlays_pair_tools_both_trees_have(tmp_path: Path) -> None:
    builder, root = stand_in_trees(tmp_path)
    tools = builder / native.TOOLS_DIR
    assert native.overlays(builder, root) == [(tools / "dash", "/usr/bin/dash"),
                                              (tools / "sed", "/usr/bin/sed"),
                                              (tools / "grep", "/usr/bin/grep")]


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): (os.readlink(p) if p.is_symlink() else
                                       p.read_text() if p.is_file() else "<dir>")
            for p in sorted(root.rglob("*"))}


@pytest.mark.image
def test_overlay_is_read_only_and_unmounting_restores_the_tree(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting needs root")
    builder, root = stand_in_trees(tmp_path)
    before = snapshot(root)
    hook = [sys.executable, "-m", "smartos_image.native"]  # as mmdebstrap's hooks call it
    try:
        subprocess.run([*hook, "mount-root", str(root), str(builder)], check=True)
        subprocess.run([*hook, "mount-overlays", str(root), str(builder)], check=True)
        assert (root / "usr/bin/sed").read_text() == "native sed\n"
        assert (root / "usr/bin/cp").read_text() == "target cp\n"
        assert (root / native.NATIVE_ROOT.lstrip("/") / native.TOOLS_DIR / "grep").read_text() == \
            "native grep\n"
        with pytest.raises(OSError):
            (root / "usr/bin/sed").write_text("changed")
        with pytest.raises(OSError):
            (root / native.NATIVE_ROOT.lstrip("/") / "new-file").write_text("x")
    finally:
        subprocess.run([*hook, "unmount", str(root)], check=True)
    assert snapshot(root) == before
    assert (builder / native.TOOLS_DIR / "sed").read_text() == "native sed\n"
    assert str(root) not in Path("/proc/self/mounts").read_text()


def test_hook_entry_refuses_a_mount_without_the_builder(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "smartos_image.native", "mount-root", str(tmp_path)],
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "needs the native builder tree" in result.stderr
