"""The one place smartosctl runs external programs: argument lists, stdin closed, C.UTF-8."""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

from .errors import CtlError, Exit

Completed = subprocess.CompletedProcess[str]


def run(cmd: Sequence[str | Path], *, check: bool = True, input_text: str | None = None,
        timeout: float | None = None, pass_fds: Sequence[int] = ()) -> subprocess.CompletedProcess[str]:
    argv = [str(c) for c in cmd]
    env = dict(os.environ, LANG="C.UTF-8", LC_ALL="C.UTF-8")
    try:
        proc = subprocess.run(argv, input=input_text, capture_output=True, text=True, env=env,
                              stdin=None if input_text is not None else subprocess.DEVNULL,
                              timeout=timeout, check=False, pass_fds=pass_fds)
    except FileNotFoundError as exc:
        raise CtlError(f"{argv[0]} is not installed", code=Exit.UNAVAILABLE) from exc
    except subprocess.TimeoutExpired as exc:
        raise CtlError(f"{shlex.join(argv)} did not finish in {timeout:.0f} s",
                       code=Exit.FAILED) from exc
    if check and proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip()[-1500:]
        raise CtlError(f"{Path(argv[0]).name} failed (exit {proc.returncode}): {tail}", code=Exit.FAILED)
    return proc


def follow(cmd: Sequence[str | Path]) -> Iterator[str]:
    """The lines a long-running program prints, as they come (e.g. `ip monitor`); stops when
    it exits."""
    argv = [str(c) for c in cmd]
    env = dict(os.environ, LANG="C.UTF-8", LC_ALL="C.UTF-8")
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=env) as proc:
        assert proc.stdout is not None
        yield from proc.stdout
