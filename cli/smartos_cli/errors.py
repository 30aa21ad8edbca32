"""The one error type smartosctl raises; the CLI turns it into a message and an exit code."""

from __future__ import annotations

from enum import IntEnum


class Exit(IntEnum):
    """smartosctl's exit codes (documented in `smartosctl --help` and the user guide)."""

    OK = 0
    FAILED = 1          # the action was tried and failed (Home Assistant did not start, ...)
    BAD_INPUT = 2       # refused before anything changed: invalid argument, unknown name
    NOT_ALLOWED = 3     # the caller may not do this (not the admin, or a lock-out without --force)
    UNAVAILABLE = 4     # a service smartosctl needs is not running (smartos-agent, Home Assistant)


class CtlError(Exception):
    """A failure the user can act on: what went wrong, and a hint on what to do about it."""

    def __init__(self, message: str, hint: str | None = None, code: Exit = Exit.BAD_INPUT) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.code = code

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"
