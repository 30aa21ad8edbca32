#!/usr/bin/env python3
"""`./build.py ...` is `smartos ...`: the SmartOS image builder.

On a fresh host it first makes the builder's Python environment (a venv under the cache
directory, outside this repository) and re-runs itself there.
"""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent
VENV = Path(os.environ.get("SMARTOS_VENV") or
            Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "smartos" / "venv")


def _bootstrap() -> None:
    py = VENV / "bin" / "python"
    stamp = VENV / ".smartos-installed"
    pyproject = REPO / "pyproject.toml"
    # Reinstall when the project's dependencies or this checkout's location changed.
    wanted = f"{REPO}\n{pyproject.read_text()}"
    if not py.exists() or not stamp.exists() or stamp.read_text() != wanted:
        if subprocess.call([sys.executable, "-c", "import ensurepip, venv"]) != 0:
            if os.geteuid() == 0:
                subprocess.check_call(["apt-get", "install", "-y", "-q", "python3-venv"])
            else:
                sys.exit("python3-venv is missing: sudo apt-get install python3-venv")
        print(f"setting up the builder's Python environment in {VENV} ...", file=sys.stderr)
        subprocess.check_call([sys.executable, "-m", "venv", str(VENV)])
        # uv (a dependency of the builder anyway) installs the rest: 10 s instead of pip's 90 s
        subprocess.check_call([str(py), "-m", "pip", "install", "-q", "uv"])
        subprocess.check_call([str(VENV / "bin" / "uv"), "pip", "install", "-q", "--python", str(py),
                               "-e", f"{REPO}[test]"])
        stamp.write_text(wanted)
    os.environ["PATH"] = f"{VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    os.execv(str(py), [str(py), str(REPO / "build.py"), *sys.argv[1:]])


def _test(args: list[str]) -> None:
    """`./build.py test [pytest args]`: the whole test suite (unit, image build, QEMU boot), after
    installing the host tools its tests run for real (nft, dbus-daemon, wg, gpg, rauc, QEMU ...)
    and registering qemu-user for the Raspberry Pi images' arm64 trees."""
    from rich.console import Console
    from smartos_image.errors import SmartOSError
    from smartos_image.host import enable_emulation, install_missing, missing_test_tools

    os.chdir(REPO)
    try:
        install_missing(missing_test_tools(), Path(os.devnull), Console(stderr=True))
        enable_emulation("arm64")
    except SmartOSError as exc:  # not root: the tests that need these skip or fail by name
        print(f"warning: {exc}", file=sys.stderr)
    # Two workers (pytest-xdist), one per core: the x86-64 VM's tests on one, everything else on
    # the other beside them (tests/conftest.py, xdist_group). `-n 0` runs them in one process.
    if not any(a in ("-n", "--numprocesses", "no:xdist") or a.startswith(("-n", "--numprocesses="))
               for a in args):
        args = ["-n", "2", *args]
    os.execv(sys.executable, [sys.executable, "-m", "pytest", *args])


if __name__ == "__main__":
    if Path(sys.prefix).resolve() != VENV.resolve():
        _bootstrap()
    if sys.argv[1:2] == ["test"]:
        _test(sys.argv[2:])
    from smartos_image.cli import main

    main()
