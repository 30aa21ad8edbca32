"""OS updates: the channel index, RAUC installs, and the record of every attempt.

A channel tree (made by `smartos release` on the build host) holds, per channel and board, an
index.json of releases and its signature (channel_index.py: the format, expiry and sequence);
each release names a RAUC bundle and the hash of its signed manifest (which holds the
dm-verity root hash of everything in the bundle). An install checks that hash with `rauc info`,
then streams the bundle into the other root slot with RAUC (HTTP range requests; the bundle's
block-hash-index lets RAUC take every 4 KiB block it already has from the local slots) and
marks the slot to boot next. The boot after it is a trial: the health gate (health.py) confirms
the slot once Home Assistant is healthy, or reboots, and the boot loader falls back to the
previous slot after three failed tries. What happened is kept in
/data/smartos/update-state.json for `smartosctl update status`.

Everything that can be refused is refused before RAUC writes a block: the index's signature
must verify against the image's keyring (before it is parsed), it must not have expired nor be
older than one this device accepted before, and it must name this board; the release must be
newer (unless allowed) and list this version as one it updates from; `rauc info` must verify
the bundle's signature against the image's keyring and show the compatible, version and size
the index promised; the slot must be large enough. RAUC is then held to exactly that bundle:
with require-manifest-hash (RAUC 1.14 and later) and, on every version, the pre-install handler
(pre_install_check), which refuses a bundle whose root filesystem image is not the one
`rauc info` vouched for (one swapped in between the two fetches). A refusal is recorded in the
history and changes no slot.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from . import channel_index
from . import status as status_mod
from .errors import CtlError, Exit
from .files import write_atomically
from .paths import Paths
from .run import run

CHANNELS = ("stable", "beta", "dev")
POLICIES = ("notify", "install")
KEYRING = Path("/etc/rauc/keyring.pem")
# What the agent is installing, for RAUC's pre-install handler (root only; gone at reboot)
EXPECTED = Path("/run/smartos/rauc-expected.json")
REFUSED = EXPECTED.with_name("rauc-refused.txt")  # the pre-install handler's reason (RAUC's own
# error only says that the handler failed)
BUILT_SETTINGS = Path("/etc/smartos/update.json")
OS_RELEASE = Path("/etc/os-release")
RAUC = "de.pengutronix.rauc"
HISTORY_KEEP = 20
FETCH_TRIES = 3
INSTALL_TRIES = 3        # whole-install retries on a network failure; RAUC already retries each request
MIN_DATA_FREE = 64 << 20  # RAUC's hash indexes of the slots live on /data


@dataclass(frozen=True)
class Settings:
    url: str
    channel: str
    policy: str
    compatible: str
    health_timeout: int = 900  # seconds the health gate waits for Home Assistant on a trial boot

    def index_url(self, board: str) -> str:
        return f"{self.url.rstrip('/')}/{self.channel}/{board}/index.json"


def load_settings(paths: Paths, built: Path | None = None) -> Settings:
    """The image's settings (/etc/smartos/update.json), then the owner's choices on /data."""
    values: dict[str, Any] = {"url": "", "channel": "stable", "policy": "notify", "compatible": ""}
    built = built or BUILT_SETTINGS
    if built.exists():
        values |= json.loads(built.read_text())
    own = paths.state / "update.json"
    if own.exists():
        values |= parse_owner_settings(own.read_text(), str(own))
    known = {f for f in Settings.__dataclass_fields__}
    return Settings(**{k: v for k, v in values.items() if k in known})


def _check_changes(changes: dict[str, Any]) -> None:
    if "channel" in changes and changes["channel"] not in CHANNELS:
        raise CtlError(f"channel: expected one of {', '.join(CHANNELS)}, got {changes['channel']!r}")
    if "policy" in changes and changes["policy"] not in POLICIES:
        raise CtlError(f"policy: expected one of {', '.join(POLICIES)}, got {changes['policy']!r}")
    if "url" in changes and (not isinstance(changes["url"], str) or changes["url"] and (
            urllib.parse.urlsplit(changes["url"]).scheme not in ("http", "https")
            or any(c.isspace() for c in changes["url"]))):
        raise CtlError(f"url: expected an http:// or https:// URL, got {changes['url']!r}")


def parse_owner_settings(text: str, where: str = "update.json") -> dict[str, Any]:
    """The owner's choices on /data (channel, policy, url): what `update channel|policy|url`
    writes, nothing else; the compatible string and the rest come from the image only."""
    try:
        raw = json.loads(text)
        if not isinstance(raw, dict) or not set(raw) <= {"channel", "policy", "url"}:
            raise CtlError("expected only channel, policy and url")
        _check_changes(raw)
        return raw
    except (ValueError, CtlError) as exc:
        raise CtlError(f"{where}: {exc}") from None


def change_settings(paths: Paths, **changes: Any) -> Settings:
    _check_changes(changes)
    own = paths.state / "update.json"
    current = parse_owner_settings(own.read_text(), str(own)) if own.exists() else {}
    write_atomically(own, json.dumps(current | changes, indent=2) + "\n")
    return load_settings(paths)


def os_facts(os_release: Path = OS_RELEASE) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in os_release.read_text().splitlines() if "=" in line)
    facts = {k: v.strip('"') for k, v in pairs}
    return {"version": facts.get("VERSION_ID", "0"), "board": facts.get("SMARTOS_BOARD", "")}


def version_of(text: str, where: str) -> Version:
    try:
        return Version(text)
    except InvalidVersion:
        raise CtlError(f"{where}: {text!r} is not a version") from None


# -- the channel index ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Release:
    version: str
    url: str            # absolute, resolved against the index's own URL
    size: int
    sha256: str
    manifest_hash: str
    min_version: str
    notes: str
    released_at: str
    homeassistant: str


def fetch(url: str, timeout: float = 30, missing: CtlError | None = None) -> bytes:
    """GET url, retried on connection errors and 5xx answers (not on 404: it will not appear,
    and is reported as missing if given)."""
    last = ""
    for attempt in range(FETCH_TRIES):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                return bytes(resp.read())
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
            if exc.code == 404:
                raise missing or CtlError(
                    f"{url}: not found (HTTP 404)", hint="nothing is released on this channel for "
                    "this board yet, or the update URL is wrong (smartosctl update status)",
                    code=Exit.UNAVAILABLE) from None
            if exc.code < 500:
                break
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            last = str(getattr(exc, "reason", exc))
        time.sleep(2 * (attempt + 1))
    raise CtlError(f"cannot fetch {url}: {last}", hint="check the network and `smartosctl update "
                   "status` (channel, URL)", code=Exit.UNAVAILABLE)


def verify_signature(data: bytes, signature: bytes, url: str, keyring: Path = KEYRING) -> None:
    """Refuse data unless signature is a CMS signature of exactly these bytes, made with a
    code-signing certificate that the keyring's CA issued.

    The chain is checked for any purpose and the signer's extendedKeyUsage here, as RAUC's
    check-purpose=codesign does: OpenSSL before 3.2 has no codesign purpose, and its default
    (S/MIME signing) refuses a certificate made for code signing only. -no-CApath/-no-CAstore:
    only the keyring is trusted, never the system's web CAs."""
    refused = f"refused {url}: its signature does not verify against this device's update keyring"
    hint = ("the server is not the publisher's, or the index was changed after it was signed; "
            "nothing is installed from it")
    with tempfile.TemporaryDirectory(prefix="smartos-index-") as tmp:
        content, sig, signer = Path(tmp, "index.json"), Path(tmp, "index.json.sig"), Path(tmp, "signer.pem")
        content.write_bytes(data)
        sig.write_bytes(signature)
        proc = run(["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", sig,
                    "-content", content, "-CAfile", keyring, "-no-CApath", "-no-CAstore",
                    "-purpose", "any", "-signer", signer, "-out", os.devnull],
                   check=False, timeout=60)
        if proc.returncode != 0:
            why = next((ln for ln in proc.stderr.splitlines() if "error" in ln.lower()), "")
            raise CtlError(f"{refused}{f' ({why.strip()[:200]})' if why else ''}", hint=hint,
                           code=Exit.FAILED)
        usage = run(["openssl", "x509", "-in", signer, "-noout", "-ext", "extendedKeyUsage"],
                    check=False).stdout
        if "Code Signing" not in usage:
            raise CtlError(f"{refused}: the signer's certificate is not for code signing",
                           hint=hint, code=Exit.FAILED)


def releases_of(index: channel_index.Index, url: str) -> list[Release]:
    """The index's releases, newest first, their files resolved against the index's URL."""
    found = []
    for entry in index.releases:
        version_of(entry.version, url)
        found.append(Release(
            version=entry.version, url=urllib.parse.urljoin(url, entry.file), size=entry.size,
            sha256=entry.sha256, manifest_hash=entry.manifest_hash, min_version=entry.min_version,
            notes=entry.notes, released_at=entry.released_at, homeassistant=entry.homeassistant))
    return sorted(found, key=lambda r: Version(r.version), reverse=True)


def read_index(data: bytes, signature: bytes, url: str, *, compatible: str, seen: int,
               at: datetime.datetime, keyring: Path = KEYRING) -> channel_index.Index:
    """The channel index in data, once its signature verified (nothing is parsed before), if it
    is this board's, has not expired and is not older than the newest this device accepted
    (seen: its sequence number)."""
    verify_signature(data, signature, url, keyring)
    try:
        index = channel_index.parse(data)
    except channel_index.BadIndex as exc:
        raise CtlError(f"{url}: {exc}", code=Exit.FAILED) from None
    if index.compatible != compatible:
        raise CtlError(f"{url} is for {index.compatible!r}, this device is {compatible!r}",
                       hint="the update URL points at another board's channel", code=Exit.FAILED)
    if index.expired(at):
        raise CtlError(f"refused {url}: the channel index expired at {index.expires} (issued "
                       f"{index.issued_at}): the server has stopped following the publisher, or "
                       "replays an old index", hint="the publisher re-signs the channel with "
                       "`smartos release-refresh`; nothing is installed from an expired index",
                       code=Exit.FAILED)
    if index.sequence < seen:
        raise CtlError(f"refused {url}: its index is number {index.sequence}, this device has "
                       f"already accepted number {seen}: an older index replayed",
                       hint="the server is not serving the publisher's current channel",
                       code=Exit.FAILED)
    for entry in index.releases:
        version_of(entry.version, url)
    return index


def releases(settings: Settings, board: str, state: State) -> tuple[str, list[Release]]:
    """Fetch, verify and accept the channel's index; state records what was accepted (the
    caller saves it)."""
    if not settings.url:
        raise CtlError("no update URL is set", hint="smartosctl update url https://... (where the "
                       "release tree is served)", code=Exit.BAD_INPUT)
    if not KEYRING.exists():
        raise CtlError("this image has no update keyring (/etc/rauc/keyring.pem): it was built "
                       "without `smartos keys init`, so it cannot verify any update",
                       hint="reflash with an image built after `smartos keys init`", code=Exit.FAILED)
    url = settings.index_url(board)
    data = fetch(url)
    sig_url = url + channel_index.SIGNATURE_SUFFIX
    signature = fetch(sig_url, missing=CtlError(
        f"refused {url}: it is not signed ({sig_url} not found)", hint="the channel was published "
        "before releases signed their index (publish or refresh it again), or the server is not "
        "the publisher's", code=Exit.FAILED))
    seen = int(state.channels.get(url, {}).get("sequence", 0))
    index = read_index(data, signature, url, compatible=settings.compatible, seen=seen,
                       at=datetime.datetime.now(datetime.UTC), keyring=KEYRING)
    state.channels[url] = {"sequence": index.sequence, "issued_at": index.issued_at,
                           "expires": index.expires, "accepted_at": now()}
    return url, releases_of(index, url)


def choose(candidates: list[Release], current: str, wanted: str = "",
           allow_downgrade: bool = False) -> Release:
    """The release to install: the newest, or the one asked for; refuses downgrades and releases
    that do not update from the current version."""
    now = version_of(current, "this system's version")
    if wanted:
        match = [r for r in candidates if Version(r.version) == version_of(wanted, "--version")]
        if not match:
            have = ", ".join(r.version for r in candidates) or "none"
            raise CtlError(f"version {wanted} is not in the channel (it has: {have})")
        pick = match[0]
    else:
        if not candidates or Version(candidates[0].version) <= now:
            raise CtlError(f"already up to date ({current})", code=Exit.OK)
        pick = candidates[0]
    if Version(pick.version) == now:
        raise CtlError(f"{pick.version} is the running version", code=Exit.OK)
    if Version(pick.version) < now and not allow_downgrade:
        raise CtlError(f"{pick.version} is older than the running {current}: refusing a downgrade",
                       hint="pass --allow-downgrade if you mean it (Home Assistant's data may "
                            "have been migrated by the newer version)")
    if pick.min_version and now < version_of(pick.min_version, "min_version"):
        raise CtlError(f"{pick.version} updates only from {pick.min_version} or newer; this is {current}",
                       hint=f"install {pick.min_version} first: smartosctl update install --version "
                            f"{pick.min_version}")
    return pick


# -- slots and RAUC ------------------------------------------------------------------------------

def booted_slot(cmdline: Path = Path("/proc/cmdline")) -> str:
    slot = status_mod.booted_slot(cmdline.read_text())
    if slot is not None:
        return slot
    raise CtlError("the kernel command line names no rauc.slot: not booted from a SmartOS slot",
                   code=Exit.UNAVAILABLE)


def rauc_status() -> dict[str, Any]:
    out = run(["rauc", "status", "--detailed", "--output-format=json"]).stdout
    return dict(json.loads(out))


def slots(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """bootname -> the slot's status (device, state, boot_status, installed bundle)."""
    found = {}
    for entry in status.get("slots", []):
        for name, slot in entry.items():
            if slot.get("class") == "rootfs":
                found[str(slot["bootname"])] = {"name": name, **slot}
    return found


def bundle_info(url: str) -> dict[str, Any]:
    """The bundle's signed manifest, read by RAUC (only the signature and manifest are fetched):
    an unsigned, truncated or foreign-signed bundle fails here."""
    proc = run(["rauc", "info", "--output-format=json", url], check=False, timeout=300)
    if proc.returncode != 0:
        # RAUC's and its nbd helper's progress messages ("rauc-nbd-Message: ..."), then the error
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and "-Message:" not in ln]
        raise CtlError(f"refused {url}: {' '.join(lines)[-600:] or 'rauc info failed'}",
                       hint="the bundle is not signed by this device's update CA, or is damaged",
                       code=Exit.FAILED)
    return dict(json.loads(proc.stdout))


def verify_bundle(info: dict[str, Any], release: Release, compatible: str, slot_bytes: int) -> str:
    """Compare the signed manifest with what the index promised; return the root filesystem
    image's SHA-256 from it (what the pre-install handler holds RAUC's install to)."""
    if info.get("compatible") != compatible:
        raise CtlError(f"refused: the bundle is for {info.get('compatible')!r}, this device is "
                       f"{compatible!r}", code=Exit.FAILED)
    if info.get("version") != release.version:
        raise CtlError(f"refused: the index says {release.version} but the signed bundle is "
                       f"{info.get('version')!r}", code=Exit.FAILED)
    if info.get("hash") != release.manifest_hash:
        raise CtlError("refused: the bundle's manifest hash does not match the channel index",
                       code=Exit.FAILED)
    images = [img for entry in info.get("images", []) for img in entry.values()]
    need = max((int(img.get("size") or 0) for img in images), default=0)
    if need > slot_bytes:
        raise CtlError(f"refused: the root filesystem image needs {need / 2**20:.0f} MiB, the "
                       f"slot has {slot_bytes / 2**20:.0f} MiB", hint="this release needs a "
                       "reflash with larger slots", code=Exit.FAILED)
    rootfs = [str(img.get("checksum") or "") for entry in info.get("images", [])
              for cls, img in entry.items() if cls == "rootfs"]
    if len(rootfs) != 1 or len(rootfs[0]) != 64:
        raise CtlError("refused: the signed bundle has no single root filesystem image",
                       code=Exit.FAILED)
    return rootfs[0]


def device_bytes(device: str) -> int:
    return int(run(["blockdev", "--getsize64", device]).stdout.strip())


def install_args(release: Release, transaction: str, *,
                 pin_manifest: bool = True) -> dict[str, tuple[str, str]]:
    """InstallBundle's args (name -> D-Bus signature, value): the transaction the pre-install
    handler recognizes, and the signed index's manifest hash, which RAUC (1.14 and later)
    compares with the bundle it actually installs."""
    args = {"transaction-id": ("s", transaction)}
    if pin_manifest:
        args["require-manifest-hash"] = ("s", release.manifest_hash)
    return args


UNSUPPORTED_PIN = "Unsupported key: require-manifest-hash"  # RAUC before 1.14 (Debian 13 has 1.13)


def rauc_install(release: Release, transaction: str) -> str:
    """InstallBundle over D-Bus; the error text, or "" on success. RAUC 1.13 does not know
    require-manifest-hash and refuses the call before it starts: then it runs without it, and
    the pre-install handler alone holds it to the bundle checked."""
    REFUSED.unlink(missing_ok=True)
    error = asyncio.run(_rauc_install(release.url, install_args(release, transaction)))
    if UNSUPPORTED_PIN in error:
        error = asyncio.run(_rauc_install(release.url, install_args(release, transaction,
                                                                    pin_manifest=False)))
    if error and REFUSED.exists():
        error = f"{REFUSED.read_text().strip()} ({error})"
        REFUSED.unlink()
    return error


async def _rauc_install(source: str, args: dict[str, tuple[str, str]]) -> str:
    from dbus_fast import BusType, Message, MessageType, Variant
    from dbus_fast.aio import MessageBus

    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    done: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def on_signal(msg: Any) -> None:
        if msg.message_type == MessageType.SIGNAL and msg.member == "Completed" and not done.done():
            done.set_result(int(msg.body[0]))

    bus.add_message_handler(on_signal)
    try:
        await bus.call(Message(destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
                               interface="org.freedesktop.DBus", member="AddMatch", signature="s",
                               body=[f"type='signal',sender='{RAUC}',interface='{RAUC}.Installer',"
                                     "member='Completed'"]))
        reply = await bus.call(Message(
            destination=RAUC, path="/", interface=f"{RAUC}.Installer", member="InstallBundle",
            signature="sa{sv}", body=[source, {k: Variant(*v) for k, v in args.items()}]))
        assert reply is not None
        if reply.message_type == MessageType.ERROR:
            return f"{reply.error_name}: {reply.body[0] if reply.body else ''}"
        code = await done
        if code == 0:
            return ""
        err = await bus.call(Message(destination=RAUC, path="/", interface="org.freedesktop.DBus.Properties",
                                     member="Get", signature="ss", body=[f"{RAUC}.Installer", "LastError"]))
        assert err is not None
        return str(err.body[0].value) if err.body else f"installation failed ({code})"
    finally:
        bus.disconnect()


# -- RAUC's pre-install handler -------------------------------------------------------------------

def expect(release: Release, transaction: str, image_sha256: str, path: Path = EXPECTED) -> None:
    """Tell the pre-install handler which bundle this transaction must install."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomically(path, json.dumps({"transaction": transaction, "version": release.version,
                                       "manifest_hash": release.manifest_hash,
                                       "image_sha256": image_sha256}) + "\n", mode=0o600)


def pre_install_check(env: Mapping[str, str], expected: Path = EXPECTED) -> str:
    """Run by RAUC (/etc/rauc/system.conf [handlers] pre-install=) once it has verified and
    mounted the bundle it is about to install, before it touches a slot: "" to go on, or why
    not. RAUC passes the signed manifest's root filesystem digest; an install the agent started
    (its transaction id) must carry the image `rauc info` vouched for just before, so an older
    bundle, even one signed by the same CA, swapped in on the server between the two fetches is
    refused. Installs the agent did not start (root's own `rauc install`) are not its business."""
    if not expected.exists():
        return ""
    want = json.loads(expected.read_text())
    if env.get("RAUC_TRANSACTION_ID", want.get("transaction")) != want.get("transaction"):
        return ""  # another install (root's own); a RAUC that names no transaction is checked
    digests = [env.get(f"RAUC_IMAGE_DIGEST_{n}", "") for n in env.get("RAUC_TARGET_SLOTS", "").split()
               if env.get(f"RAUC_IMAGE_CLASS_{n}") == "rootfs"]
    if digests != [want.get("image_sha256")]:
        return (f"refused: the bundle RAUC fetched is not {want.get('version')} as checked (root "
                f"filesystem {', '.join(d[:12] for d in digests) or 'none'}, expected "
                f"{str(want.get('image_sha256'))[:12]}): it was replaced on the server during the install")
    return ""


# -- the record of attempts ----------------------------------------------------------------------

@dataclass
class State:
    pending: dict[str, Any] | None = None  # an install: version, slot, from, state, attempts
    history: list[dict[str, Any]] = field(default_factory=list)
    available: dict[str, Any] | None = None  # what the last check found
    last_check: str = ""
    check_error: str = ""  # why the last check refused the channel ("" = it did not)
    # index URL -> the newest index accepted from it: sequence (a lower one is a replay),
    # issued_at, expires (past it, the channel is stale), accepted_at
    channels: dict[str, dict[str, Any]] = field(default_factory=dict)


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def load_state(paths: Paths) -> State:
    path = paths.state / "update-state.json"
    if not path.exists():
        return State()
    raw = json.loads(path.read_text())
    return State(**{k: v for k, v in raw.items() if k in State.__dataclass_fields__})


def save_state(paths: Paths, state: State) -> None:
    state.history = state.history[-HISTORY_KEEP:]
    write_atomically(paths.state / "update-state.json", json.dumps(asdict(state), indent=2) + "\n")


def finish(paths: Paths, state: State, result: str, **details: Any) -> None:
    """End the pending attempt with a result (installed, failed, rolled back, interrupted)."""
    entry = {**(state.pending or {}), "result": result, "ended_at": now(), **details}
    entry.pop("state", None)
    state.history.append(entry)
    state.pending = None
    save_state(paths, state)


# -- what the agent serves -----------------------------------------------------------------------

def check(paths: Paths) -> dict[str, Any]:
    settings = load_settings(paths)
    facts = os_facts()
    state = load_state(paths)
    state.last_check = now()
    try:
        url, found = releases(settings, facts["board"], state)
    except CtlError as exc:
        state.check_error = exc.message
        save_state(paths, state)
        raise
    current = Version(facts["version"])
    newer = [r for r in found if Version(r.version) > current]
    state.available = asdict(newer[0]) if newer else None
    state.check_error = ""
    save_state(paths, state)
    return {"current": facts["version"], "channel": settings.channel, "index": url,
            "available": [asdict(r) for r in newer], "releases": [r.version for r in found],
            "expires": state.channels[url]["expires"]}


def install(paths: Paths, version: str = "", allow_downgrade: bool = False) -> dict[str, Any]:
    """Install a release into the other slot and make it boot next; the caller reboots.

    A refusal is recorded in the history (result "refused", the reason) and changes no slot."""
    settings = load_settings(paths)
    facts = os_facts()
    state = load_state(paths)
    wanted = version or "newest"
    try:
        _, found = releases(settings, facts["board"], state)
        pick = choose(found, facts["version"], version, allow_downgrade)
        wanted = pick.version
        booted = booted_slot()
        by_name = slots(rauc_status())
        target = next((name for name in by_name if name != booted), None)
        if target is None:
            raise CtlError("RAUC lists no second root slot", code=Exit.FAILED)
        image_sha256 = verify_bundle(bundle_info(pick.url), pick, settings.compatible,
                                     device_bytes(by_name[target]["device"]))
        if shutil.disk_usage(paths.data).free < MIN_DATA_FREE:
            raise CtlError(f"refused: less than {MIN_DATA_FREE >> 20} MiB free on /data (RAUC "
                           "keeps its slot hash indexes there)", hint="smartosctl status shows "
                           "what uses it", code=Exit.FAILED)
    except CtlError as exc:
        if exc.code != Exit.OK:  # "already up to date" is no refusal
            state.history.append({"version": wanted, "from": facts["version"], "result": "refused",
                                  "reason": exc.message, "ended_at": now()})
        save_state(paths, state)
        raise
    transaction = str(uuid.uuid4())
    state.pending = {"version": pick.version, "from": facts["version"], "slot": target,
                     "from_slot": booted, "started_at": now(), "state": "installing", "attempts": [],
                     "manifest_hash": pick.manifest_hash, "transaction": transaction}
    save_state(paths, state)
    expect(pick, transaction, image_sha256)
    error = ""
    started = time.monotonic()
    try:
        for _ in range(INSTALL_TRIES):
            error = rauc_install(pick, transaction)
            # a download that failed after RAUC's own retries: start again (the blocks already
            # written are found in the slot and not fetched twice)
            if not error or not any(w in error.lower() for w in ("http", "curl", "nbd", "i/o error",
                                                                  "input/output")):
                break
    finally:
        EXPECTED.unlink(missing_ok=True)
    seconds = round(time.monotonic() - started, 1)
    if error:
        finish(paths, state, "failed", error=error, seconds=seconds)
        raise CtlError(f"installing {pick.version} failed: {error}", hint="the running system "
                       "is unchanged; the other slot is marked not bootable until an install "
                       "succeeds", code=Exit.FAILED)
    state.pending["state"] = "installed"
    state.pending["installed_at"] = now()
    state.pending["seconds"] = seconds
    save_state(paths, state)
    return {"installed": pick.version, "from": facts["version"], "slot": target, "seconds": seconds,
            "notes": pick.notes}


def stale(settings: Settings, board: str, state: State, at: datetime.datetime) -> str:
    """A warning when the channel's newest accepted index has expired (or the last check was
    refused): updates stop until the publisher re-signs it."""
    if state.check_error:
        return state.check_error
    seen = state.channels.get(settings.index_url(board)) if settings.url else None
    if seen and at >= channel_index.parse_time(str(seen["expires"])):
        return (f"the channel index expired at {seen['expires']}: no update is accepted until "
                "the publisher re-signs it")
    return ""


def status(paths: Paths) -> dict[str, Any]:
    settings = load_settings(paths)
    state = load_state(paths)
    facts = os_facts()
    if state.available and Version(state.available["version"]) <= Version(facts["version"]):
        state.available = None  # installed since the check found it
    info: dict[str, Any] = {"version": facts["version"], "board": facts["board"],
                            "channel": settings.channel, "policy": settings.policy, "url": settings.url,
                            "pending": state.pending, "history": state.history[::-1],
                            "available": state.available, "last_check": state.last_check,
                            "keyring": KEYRING.exists(),
                            "warning": stale(settings, facts["board"], state,
                                             datetime.datetime.now(datetime.UTC))}
    try:
        info["booted"] = booted_slot()
        info["slots"] = {}
        for name, s in slots(rauc_status()).items():
            detail = s.get("slot_status") or {}
            info["slots"][name] = {"state": s.get("state"), "boot_status": s.get("boot_status"),
                                   "version": (detail.get("bundle") or {}).get("version"),
                                   "installed": (detail.get("installed") or {}).get("timestamp")}
    except CtlError as exc:
        info["slots_error"] = exc.message
    return info


def auto(paths: Paths) -> dict[str, Any]:
    """The daily timer: check, then notify (record and log) or install, by policy."""
    settings = load_settings(paths)
    if not settings.url:
        return {"skipped": "no update URL set"}
    found = check(paths)
    if not found["available"]:
        return {"result": "up to date", **found}
    newest = found["available"][0]
    failed_before = [h for h in load_state(paths).history
                     if h.get("version") == newest["version"] and h.get("result") == "rolled back"]
    if settings.policy != "install" or failed_before:
        # a release that already rolled back here is not retried by itself every day
        why = " (it rolled back here before: install it by hand to retry)" if failed_before else ""
        print(f"SmartOS {newest['version']} is available on {settings.channel} "
              f"(running {found['current']}): smartosctl update install{why}", flush=True)
        return {"result": "available", **found}
    result = install(paths)
    return {"result": "installed", **result}
