"""The one place that runs external programs.

Argument lists only, stdin closed, a C.UTF-8 locale, the command logged at debug level, and a
failure reported once with the tail of its output.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from .errors import SmartOSError

log = logging.getLogger("smartos")

OUTPUT_TAIL_LINES = 25


def _env(extra: Mapping[str, str] | None, inherit: bool = True) -> dict[str, str]:
    env = dict(os.environ) if inherit else {}
    env.update({"LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"})
    if extra:
        env.update(extra)
    return env


def run(
    cmd: Sequence[str | Path],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    capture: bool = False,
    check: bool = True,
    logfile: Path | None = None,
    input_text: str | None = None,
    inherit_env: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run cmd; return its result. With capture, stdout is returned and stderr kept for errors.

    Without capture, output goes to logfile (appended) so the console shows only progress.
    """
    argv = [str(c) for c in cmd]
    if "/" not in argv[0]:
        argv[0] = which(argv[0]) or argv[0]
    if not Path(argv[0]).exists():
        raise SmartOSError(f"{argv[0]} is not installed", hint="run the build as root once: it "
                           "installs the host tools it needs (or see README, host requirements)")
    log.debug("$ %s", shlex.join(argv))
    stdin = None if input_text is not None else subprocess.DEVNULL
    if capture or logfile is None:
        proc = subprocess.run(
            argv, cwd=cwd, env=_env(env, inherit_env), stdin=stdin, input=input_text,
            capture_output=True, text=True, check=False,
        )
        output = (proc.stdout or "") + (proc.stderr or "")
        if logfile is not None:
            with logfile.open("a") as fh:
                fh.write(f"$ {shlex.join(argv)}\n{output}")
    else:
        with logfile.open("a") as fh:
            fh.write(f"$ {shlex.join(argv)}\n")
            fh.flush()
            proc = subprocess.run(
                argv, cwd=cwd, env=_env(env, inherit_env), stdin=stdin, input=input_text,
                stdout=fh, stderr=subprocess.STDOUT, text=True, check=False,
            )
        output = _tail_of(logfile)
    if check and proc.returncode != 0:
        tail = "\n".join(output.strip().splitlines()[-OUTPUT_TAIL_LINES:])
        raise SmartOSError(
            f"{Path(argv[0]).name} failed (exit {proc.returncode}): {shlex.join(argv)[:300]}\n{tail}",
            hint=f"the full log is in {logfile}" if logfile else None,
        )
    return proc


def filter_file(cmd: Sequence[str | Path], src: Path, dst: Path) -> None:
    """Run cmd with src on stdin and dst as stdout (a compressor, say), failing like run()."""
    argv = [str(c) for c in cmd]
    log.debug("$ %s < %s > %s", shlex.join(argv), src, dst)
    with src.open("rb") as inp, dst.open("wb") as out:
        proc = subprocess.run(argv, stdin=inp, stdout=out, stderr=subprocess.PIPE, check=False)
    if proc.returncode != 0:
        raise SmartOSError(f"{argv[0]} failed (exit {proc.returncode}) on {src}: "
                           f"{proc.stderr.decode(errors='replace')[-500:]}")


Process = subprocess.Popen[bytes]


def stop(proc: Process, timeout: float = 20) -> None:
    """Ask a spawned program to end (SIGTERM); kill it if it has not after timeout seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def spawn(cmd: Sequence[str | Path], stderr_path: Path) -> Process:
    """Start a long-running program (QEMU) in the background; the caller stops it."""
    argv = [str(c) for c in cmd]
    log.debug("$ %s &", shlex.join(argv))
    with stderr_path.open("wb") as err:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)


def interactive(cmd: Sequence[str | Path]) -> int:
    """Run a program attached to this terminal (the VM's serial console) and return its exit code."""
    argv = [str(c) for c in cmd]
    log.debug("$ %s", shlex.join(argv))
    return subprocess.call(argv)


def _tail_of(path: Path, size: int = 16384) -> str:
    with path.open("rb") as fh:
        fh.seek(0, os.SEEK_END)
        fh.seek(max(0, fh.tell() - size))
        return fh.read().decode("utf-8", "replace")


def which(name: str) -> str | None:
    """The path of a program on PATH, beside this Python (the builder's venv), or in sbin."""
    import sys
    from shutil import which as _which

    extra = f"{Path(sys.executable).parent}:/usr/sbin:/sbin:/usr/bin:/bin"
    return _which(name) or _which(name, path=extra)
