"""The channel index: one format, written by `smartos release` and read by the device.

    <tree>/<channel>/<board>/index.json       what this module reads and writes
    <tree>/<channel>/<board>/index.json.sig   a detached CMS signature of index.json's bytes (DER),
                                              by the release signing key (extendedKeyUsage
                                              codeSigning, issued by the update CA)

A device verifies the signature against its keyring before it parses a byte of the index, so the
server (or anything between it and the device) can neither forge nor change it; that is why
plain http is acceptable for a local mirror. What the signature alone cannot stop is a server
that replays an older, genuinely signed index (to hold a device back on a release it has since
learned is vulnerable, or to name an older bundle):

* `expires`: a device refuses an index past it; the publisher re-signs within the validity
  (`smartos release`, or `smartos release-refresh` for an unchanged channel).
* `sequence`: bumped at every publish and refresh; a device keeps the highest it has accepted
  per index URL and refuses a lower one.

The builder imports this module (smartos_image never travels to the device).
"""

from __future__ import annotations

import datetime
import json
from dataclasses import asdict, dataclass
from typing import Any

FORMAT = 2               # 1: unsigned, no expiry (read only by `smartos release`, to upgrade it)
SIGNATURE_SUFFIX = ".sig"
VALIDITY_DAYS = 30       # how long a published index is accepted; re-sign before then


class BadIndex(ValueError):
    """The bytes are not a channel index of this format (each side turns it into its error)."""


@dataclass(frozen=True)
class Entry:
    """One release as the index lists it."""

    version: str
    file: str            # relative to the index
    size: int
    sha256: str          # of the bundle file
    manifest_hash: str   # of the bundle's signed manifest (it holds the dm-verity root hash)
    min_version: str     # the oldest version that may update to this one ("" = any)
    notes: str
    released_at: str
    homeassistant: str
    build_id: str


@dataclass(frozen=True)
class Index:
    channel: str
    board: str
    compatible: str
    sequence: int        # bumped by every publish and refresh: a lower one is a replay
    issued_at: str       # ISO 8601, UTC
    expires: str         # ISO 8601, UTC: refused after this
    releases: tuple[Entry, ...]

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, **asdict(self)}, indent=2) + "\n"

    def expired(self, at: datetime.datetime) -> bool:
        return at >= parse_time(self.expires)


def parse_time(text: str) -> datetime.datetime:
    when = datetime.datetime.fromisoformat(text)
    if when.tzinfo is None:
        raise BadIndex(f"{text!r} has no time zone")
    return when


def timestamp(when: datetime.datetime) -> str:
    return when.astimezone(datetime.UTC).isoformat(timespec="seconds")


def issue(*, channel: str, board: str, compatible: str, releases: list[Entry], previous: int,
          valid_days: int, at: datetime.datetime) -> Index:
    """A new index, one sequence number past the previous one, valid for valid_days from at."""
    if valid_days < 1:
        raise BadIndex(f"a validity of {valid_days} days: expected 1 or more")
    return Index(channel=channel, board=board, compatible=compatible, sequence=previous + 1,
                 issued_at=timestamp(at), expires=timestamp(at + datetime.timedelta(days=valid_days)),
                 releases=tuple(releases))


def _entry(raw: Any) -> Entry:
    if not isinstance(raw, dict):
        raise BadIndex(f"a release entry is not an object: {raw!r:.200}")
    try:
        return Entry(version=str(raw["version"]), file=str(raw["file"]), size=int(raw["size"]),
                     sha256=str(raw["sha256"]), manifest_hash=str(raw["manifest_hash"]),
                     min_version=str(raw.get("min_version", "")), notes=str(raw.get("notes", "")),
                     released_at=str(raw.get("released_at", "")),
                     homeassistant=str(raw.get("homeassistant", "")),
                     build_id=str(raw.get("build_id", "")))
    except (KeyError, TypeError, ValueError):
        raise BadIndex(f"a release entry is incomplete: {raw!r:.200}") from None


def parse(data: bytes, *, legacy: bool = False) -> Index:
    """The index in data. legacy (the builder only) also reads format 1, with sequence 0 and no
    expiry, so a tree published before signing is upgraded by its next publish."""
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadIndex(f"not a JSON channel index ({exc})") from None
    formats = (FORMAT, 1) if legacy else (FORMAT,)
    if not isinstance(raw, dict) or raw.get("format") not in formats:
        raise BadIndex(f"not a SmartOS channel index (format {FORMAT})")
    releases = raw.get("releases", [])
    if not isinstance(releases, list):
        raise BadIndex("releases: expected a list")
    try:
        if raw["format"] == 1:
            return Index(channel=str(raw.get("channel", "")), board=str(raw.get("board", "")),
                         compatible=str(raw.get("compatible", "")), sequence=0, issued_at="",
                         expires="", releases=tuple(_entry(r) for r in releases))
        index = Index(channel=str(raw["channel"]), board=str(raw["board"]),
                      compatible=str(raw["compatible"]), sequence=int(raw["sequence"]),
                      issued_at=str(raw["issued_at"]), expires=str(raw["expires"]),
                      releases=tuple(_entry(r) for r in releases))
        parse_time(index.issued_at)
        parse_time(index.expires)
    except KeyError as exc:
        raise BadIndex(f"{exc.args[0]}: missing") from None
    except (TypeError, ValueError) as exc:
        raise BadIndex(f"malformed ({exc})") from None
    return index
