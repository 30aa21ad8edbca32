"""The one error type the builder raises; the CLI turns it into a message and an exit code."""

from __future__ import annotations


class SmartOSError(Exception):
    """A failure the user can act on: what went wrong, and a hint on what to do about it."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"
