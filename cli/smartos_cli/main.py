"""smartosctl: maintain this SmartOS device. Every read command has --json.

Exit codes: 0 done; 1 tried and failed; 2 bad input (nothing changed); 3 not allowed (or a
lock-out refused without --force); 4 a service smartosctl needs is not running.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from . import __version__
from .errors import CtlError

F = TypeVar("F", bound=Callable[..., Any])


def _errors_to_exit(fn: F) -> F:
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CtlError as exc:
            click.secho(f"error: {exc.message}", fg="red", err=True)
            if exc.hint:
                click.secho(f"hint: {exc.hint}", fg="yellow", err=True)
            sys.exit(int(exc.code))
        except KeyboardInterrupt:
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _client_address() -> str:
    """The admin's own address when called over ssh (for the firewall's lock-out check)."""
    return (os.environ.get("SSH_CLIENT") or os.environ.get("SSH_CONNECTION") or "").split(" ")[0]


def _agent(area: str, method: str, signature: str = "", *args: Any) -> Any:
    from .client import call

    return call(area, method, signature, *args)


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="smartosctl")
def main() -> None:
    """Maintain this SmartOS device (run it over ssh as the admin).

    \b
    status                      the device at a glance, and warnings
    logs [ha|system|smartos]    the journal (--follow, --since 1h, --lines N)
    ha start|stop|restart       Home Assistant's service; ha check-config
    backup create|list|restore|delete|key   encrypted backups (--to a USB stick)
    vpn enable|disable|show, vpn peer add|remove   WireGuard, with QR codes
    network show|hostname NAME|wifi SSID   addresses, NAME.local, Wi-Fi (kept across updates)
    radio list, radio probe DEV USB sticks, their stable names and Zigbee firmware
    firewall show|allow|deny|remove   inbound rules (applied atomically)
    update check|install|status  OS updates from a release channel (A/B slots, rollback)
    update channel|policy|url   which channel, auto-install or notify, where releases are
    diagnostics                 a tarball for a bug report, secrets removed
    completion [bash|zsh|fish]  tab completion (bash: already on for ssh logins)
    reboot, shutdown

    Exit codes: 0 done, 1 failed, 2 bad input (nothing changed), 3 not allowed,
    4 a needed service is not running.
    """


@main.command()
@json_option
@_errors_to_exit
def status(as_json: bool) -> None:
    """OS, slot, Home Assistant, resources, addresses and warnings."""
    from .status import collect

    st = collect()
    if as_json:
        _echo_json(st.as_dict())
        return
    gib = 2**30
    rows = [
        ("SmartOS", f"{st.os_version} ({st.board}), slot {st.slot or '?'}"),
        ("Home Assistant", f"{st.homeassistant_version or '?'}: {st.homeassistant_state}"
         f"{', answering' if st.homeassistant_answers else ''} at {st.homeassistant_url}"),
        ("Host", f"{st.hostname} ({st.mdns_name}), up {st.uptime_seconds // 3600} h "
         f"{st.uptime_seconds % 3600 // 60} min"),
        ("CPU", f"{st.cpu_percent:.0f}%, load {' '.join(f'{x:.2f}' for x in st.load)}"
         + (f", {st.temperature_c:.0f} °C" if st.temperature_c is not None else "")),
        ("Memory", f"{st.memory_used_percent:.0f}% of {st.memory_total_bytes / gib:.1f} GiB"),
        *[(f"Disk {d.mount}", f"{d.percent:.0f}% of {d.total_bytes / gib:.1f} GiB") for d in st.disks],
        *[(f"Address {nic}", ", ".join(ips)) for nic, ips in st.addresses.items()],
        ("Radios", ", ".join(st.radios) or "none plugged in"),
        ("Last backup", st.last_backup or "none (smartosctl backup create)"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key:<{width}}  {value}")
    for warning in st.warnings:
        click.secho(f"warning: {warning}", fg="yellow")


@main.command()
@click.argument("source", type=click.Choice(["ha", "system", "smartos"]), default="ha")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines.")
@click.option("--since", help="e.g. 10m, 2h, 3d or 2026-11-25T08:00.")
@click.option("--lines", "-n", type=click.IntRange(min=1), default=50, show_default=True)
@json_option
@_errors_to_exit
def logs(source: str, follow: bool, since: str | None, lines: int, as_json: bool) -> None:
    """The journal of Home Assistant (ha), the SmartOS services and audit log (smartos) or all."""
    from .logs import format_line, read

    for entry in read(source, lines=lines, since=since, follow=follow):
        click.echo(format_line(entry, as_json))


@main.group()
def ha() -> None:
    """Home Assistant's service."""


def _ha_verb(verb: str) -> None:
    @ha.command(name=verb, help=f"{verb.capitalize()} Home Assistant's service.")
    @json_option
    @_errors_to_exit
    def command(as_json: bool) -> None:
        result = _agent("HomeAssistant", "Control", "s", verb)
        _echo_json(result) if as_json else click.echo(f"Home Assistant: {result['state']}")


for _verb in ("start", "stop", "restart"):
    _ha_verb(_verb)


@ha.command(name="check-config")
@json_option
@_errors_to_exit
def check_config(as_json: bool) -> None:
    """Run Home Assistant's own configuration check on the live configuration."""
    result = _agent("HomeAssistant", "CheckConfig")
    _echo_json(result) if as_json else click.echo("configuration valid")


@main.group()
def firewall() -> None:
    """Inbound firewall rules (first match wins, then the default open ports)."""


def _print_rules(data: dict[str, Any]) -> None:
    d = data["defaults"]
    local = [f"{p}/tcp" for p in d["local_tcp"]] + [f"{p}/udp" for p in d["local_udp"]]
    ports = [f"{p}/tcp" for p in d["tcp"]] + [f"{p}/udp" for p in d["udp"]]
    click.echo("open to local networks and the VPN: " + (", ".join(local) or "nothing"))
    click.echo("open to everyone: " + (", ".join(ports) or "nothing"))
    click.echo("local networks: " + ", ".join(d["local_networks"]) + ", and the subnets this box is on")
    if not data["rules"]:
        click.echo("no rules of your own (smartosctl firewall allow PORT/PROTO)")
    for r in data["rules"]:
        click.echo(f"{r['number']:>3}  {r['action']:<5} {r['ports']}/{r['proto']} "
                   f"from {r['source'] or 'anywhere'}")


@firewall.command(name="show")
@json_option
@_errors_to_exit
def firewall_show(as_json: bool) -> None:
    """The default open ports and your rules, numbered."""
    from .firewall import load
    from .paths import Paths

    data = load(Paths()).as_dict()
    _echo_json(data) if as_json else _print_rules(data)


def _fw_change(action: str) -> None:
    @firewall.command(name=action, help=f"{action.capitalize()} inbound PORT/PROTO (e.g. 1883/tcp, "
                      "5000-5010/udp), from everyone or --from a CIDR network.")
    @click.argument("ports")
    @click.option("--from", "source", metavar="CIDR", help="Only this address or network.")
    @click.option("--force", is_flag=True, help="Apply even if it would block your ssh connection.")
    @json_option
    @_errors_to_exit
    def command(ports: str, source: str | None, force: bool, as_json: bool) -> None:
        from .firewall import parse_rule

        parse_rule(action, ports, source)  # a typo is reported here, before the agent is asked
        data = _agent("Firewall", action.capitalize(), "sssb", ports, source or "", _client_address(),
                      force)
        _echo_json(data) if as_json else _print_rules(data)


for _action in ("allow", "deny"):
    _fw_change(_action)


@firewall.command(name="remove")
@click.argument("number", type=click.IntRange(min=1))
@click.option("--force", is_flag=True, help="Apply even if it would block your ssh connection.")
@json_option
@_errors_to_exit
def firewall_remove(number: int, force: bool, as_json: bool) -> None:
    """Remove rule NUMBER (see firewall show)."""
    data = _agent("Firewall", "Remove", "usb", number, _client_address(), force)
    _echo_json(data) if as_json else _print_rules(data)


@main.group(name="backup")
def backup_group() -> None:
    """Encrypted backups of Home Assistant's configuration and SmartOS's settings."""


def _password(password_file: str | None, confirm: bool, prompt: str = "Backup password") -> str:
    """From --password-file (- for stdin) or asked for on the terminal."""
    if password_file == "-":
        return sys.stdin.readline().rstrip("\n")
    if password_file:
        try:
            return Path(password_file).read_text().splitlines()[0]
        except (OSError, IndexError) as exc:
            raise CtlError(f"--password-file: cannot read a password from {password_file}") from exc
    if not sys.stdin.isatty():
        raise CtlError("no password: give --password-file FILE (or - for stdin), or run it in a terminal")
    return str(click.prompt(prompt, hide_input=True, confirmation_prompt=confirm))


password_option = click.option("--password-file", metavar="FILE",
                               help="Read the password from FILE's first line (- for stdin).")


def _print_backup(b: dict[str, Any]) -> None:
    click.echo(f"{b['name']}  {b['size_bytes'] / 2**20:.1f} MiB  {b['created']}")


@backup_group.command(name="create")
@click.option("--to", "target_dir", metavar="DIR", help="Copy it here (e.g. a mounted USB stick) "
              "instead of keeping it in /data/backups.")
@click.option("--device-key", is_flag=True, help="Encrypt it with the device's backup key (see "
              "`smartosctl backup key`) instead of a password.")
@password_option
@json_option
@_errors_to_exit
def backup_create(target_dir: str | None, device_key: bool, password_file: str | None,
                  as_json: bool) -> None:
    """Back up Home Assistant's configuration (its database consistently, while it runs) and
    SmartOS's settings (firewall, hostname, Wi-Fi, VPN), encrypted with a password. The agent
    writes it into /data/backups; with --to, smartosctl copies it there as you and removes it
    from /data/backups."""
    from .backup import copy_to

    if target_dir and not Path(target_dir).is_dir():
        raise CtlError(f"--to: {target_dir} is not a directory", hint="mount the USB stick first")
    password = "" if device_key else _password(password_file, confirm=True)
    info = _agent("Backup", "Create", "s", password)
    if target_dir:
        try:
            copied = copy_to(Path(info["path"]), Path(target_dir).resolve())
        except (CtlError, OSError) as exc:
            raise CtlError(f"{exc}; the backup stays in {info['path']}") from exc
        _agent("Backup", "Delete", "s", info["name"])
        info = {**info, "path": copied.path}
    _echo_json(info) if as_json else _print_backup(info)


@backup_group.command(name="key")
@_errors_to_exit
def backup_key() -> None:
    """Show the device's backup key: what decrypts backups made without a password (by Home
    Assistant, or with --device-key). Keep a copy somewhere safe, away from this box: without it
    such a backup cannot be restored on another one."""
    click.echo(_agent("Backup", "Key")["key"])


@backup_group.command(name="list")
@click.option("--dir", "directory", metavar="DIR", help="List this directory instead of /data/backups.")
@json_option
@_errors_to_exit
def backup_list(directory: str | None, as_json: bool) -> None:
    """Backups, newest first."""
    from .backup import as_dict, list_backups
    from .paths import Paths

    found = [as_dict(b) for b in list_backups(Path(directory) if directory else Paths().backups)]
    if as_json:
        _echo_json(found)
        return
    for b in found:
        _print_backup(b)
    if not found:
        click.echo("no backups yet (smartosctl backup create)")


@backup_group.command(name="restore")
@click.argument("name")
@click.option("--device-key", is_flag=True, help="It was made with this device's backup key.")
@password_option
@json_option
@_errors_to_exit
def backup_restore(name: str, device_key: bool, password_file: str | None, as_json: bool) -> None:
    """Restore backup NAME from /data/backups (see backup list; from a USB stick, copy it there
    first: sudo cp FILE /data/backups/). It is decrypted and checked first; a wrong password, a
    damaged file or invalid settings change nothing. Home Assistant restarts."""
    password = "" if device_key else _password(password_file, confirm=False)
    result = _agent("Backup", "Restore", "ss", name, password)
    if as_json:
        _echo_json(result)
        return
    click.echo(f"restored {result['restored']} ({result['files']} files, made {result['created']} "
               f"on {result['from_host']}); Home Assistant is starting")
    left_out = result.get("left_out") or []
    if left_out:
        click.echo(f"not restored ({len(left_out)}): " + "; ".join(left_out[:5])
                   + (" ..." if len(left_out) > 5 else ""))


@backup_group.command(name="delete")
@click.argument("name")
@_errors_to_exit
def backup_delete(name: str) -> None:
    """Delete backup NAME from /data/backups."""
    info = _agent("Backup", "Delete", "s", name)
    click.echo(f"deleted {info['name']}")


@main.group(name="vpn")
def vpn_group() -> None:
    """WireGuard: reach Home Assistant and ssh from your phone or laptop, anywhere."""


def _print_vpn(data: dict[str, Any]) -> None:
    state = "enabled" if data["enabled"] else "disabled"
    port = f"udp {data['port']} {'open' if data['port_open'] else 'closed'}"
    click.echo(f"VPN {state}, device {data['device_address']}, {port}, endpoint "
               f"{data['endpoint'] or '(not set: smartosctl vpn enable --endpoint HOST)'}")
    for p in data["peers"]:
        seen = p.get("latest_handshake")
        click.echo(f"  {p['name']:<16} {p['address']:<15} {p['public_key']}"
                   + (f"  last handshake {seen}" if seen else ""))


@vpn_group.command(name="enable")
@click.option("--endpoint", metavar="HOST[:PORT]", help="The public address or dynamic-DNS name "
              "peers dial (forward the UDP port to this box on your router).")
@json_option
@_errors_to_exit
def vpn_enable(endpoint: str | None, as_json: bool) -> None:
    """Start WireGuard (the port opens once there is a peer)."""
    data = _agent("Vpn", "Enable", "s", endpoint or "")
    _echo_json(data) if as_json else _print_vpn(data)


@vpn_group.command(name="disable")
@json_option
@_errors_to_exit
def vpn_disable(as_json: bool) -> None:
    """Stop WireGuard and close its port (peers are kept)."""
    data = _agent("Vpn", "Disable")
    _echo_json(data) if as_json else _print_vpn(data)


@vpn_group.command(name="show")
@json_option
@_errors_to_exit
def vpn_show(as_json: bool) -> None:
    """Settings, peers and their last handshake."""
    data = _agent("Vpn", "Show")
    _echo_json(data) if as_json else _print_vpn(data)


@vpn_group.group(name="peer")
def vpn_peer() -> None:
    """Add or remove a device that may connect."""


@vpn_peer.command(name="add")
@click.argument("name")
@json_option
@_errors_to_exit
def vpn_peer_add(name: str, as_json: bool) -> None:
    """Add peer NAME; prints its WireGuard config and a QR code for the phone app (shown once:
    its private key is not kept on the box)."""
    from .vpn import check_name

    check_name(name)
    data = _agent("Vpn", "AddPeer", "s", name)
    if as_json:
        _echo_json(data)
        return
    import io

    import segno

    qr = io.StringIO()
    segno.make(data["config"], error="l").terminal(out=qr, compact=True)
    click.echo(qr.getvalue())
    click.echo(data["config"])
    if data["endpoint_is_local"]:
        click.secho("note: the endpoint is this box's local address; for use away from home run "
                    "smartosctl vpn enable --endpoint YOUR-PUBLIC-NAME and add the peer again",
                    fg="yellow")
    if not data["enabled"]:
        click.secho("note: the VPN is disabled: smartosctl vpn enable", fg="yellow")


@vpn_peer.command(name="remove")
@click.argument("name")
@json_option
@_errors_to_exit
def vpn_peer_remove(name: str, as_json: bool) -> None:
    """Remove peer NAME (it can no longer connect)."""
    data = _agent("Vpn", "RemovePeer", "s", name)
    _echo_json(data) if as_json else _print_vpn(data)


@main.group(name="network")
def network_group() -> None:
    """Addresses, the hostname (NAME.local) and Wi-Fi; settings survive updates."""


@network_group.command(name="show")
@json_option
@_errors_to_exit
def network_show(as_json: bool) -> None:
    """Interfaces and addresses, default routes, DNS servers, the hostname."""
    from .network import show

    data = show()
    if as_json:
        _echo_json(data)
        return
    click.echo(f"hostname {data['hostname']} ({data['mdns_name']})")
    for nic in data["interfaces"]:
        click.echo(f"{nic['name']:<8} {nic['state'] or '?':<8} {nic['mac'] or ''}  "
                   f"{', '.join(nic['addresses'])}")
    for route in data["default_routes"]:
        click.echo(f"default via {route['via']} on {route['dev']}")
    for line in data["dns"]:
        click.echo(f"DNS {line}")


@network_group.command(name="hostname")
@click.argument("name")
@json_option
@_errors_to_exit
def network_hostname(name: str, as_json: bool) -> None:
    """Rename the box to NAME (reachable as NAME.local; Home Assistant at http://NAME.local:8123)."""
    from .network import check_hostname

    check_hostname(name)
    data = _agent("Network", "SetHostname", "s", name)
    _echo_json(data) if as_json else click.echo(f"hostname {data['hostname']} ({data['mdns_name']})")


@network_group.command(name="wifi")
@click.argument("ssid")
@click.option("--country", required=True, metavar="CC",
              help="Two-letter country code (the radio's regulatory domain).")
@password_option
@json_option
@_errors_to_exit
def network_wifi(ssid: str, country: str, password_file: str | None, as_json: bool) -> None:
    """Join Wi-Fi network SSID (WPA2; the password is stored hashed on the data partition)."""
    from .network import wifi_config

    password = _password(password_file, confirm=False, prompt="Wi-Fi password")
    wifi_config(ssid, password, country)  # a typo is reported before the agent is asked
    data = _agent("Network", "SetWifi", "sss", ssid, password, country)
    _echo_json(data) if as_json else click.echo(f"joining {data['ssid']} on {data['interface']} "
                                                f"(smartosctl network show)")


@main.group()
def radio() -> None:
    """USB radio sticks (Zigbee, Z-Wave, Thread)."""


@radio.command(name="list")
@json_option
@_errors_to_exit
def radio_list(as_json: bool) -> None:
    """USB serial devices: what each is, its stable SmartOS names and its /dev/serial/by-id path."""
    from .radio import list_radios

    radios = [r.as_dict() for r in list_radios()]
    if as_json:
        _echo_json(radios)
        return
    for r in radios:
        ident = f"{r['vendor_id']}:{r['product_id']}"
        click.echo(f"{r['device']}  {r['kind']:<8} {ident}  {r['product'] or '?'}  "
                   f"serial {r['serial'] or '?'}")
        for link in [*r["links"], r["by_id"]]:
            if link:
                click.echo(f"    {link}")
    if not radios:
        click.echo("no USB serial devices (plug the stick in; see docs/radios.md)")


@radio.command(name="probe")
@click.argument("device")
@click.option("--stop-ha", is_flag=True, help="Stop Home Assistant while probing if it holds the port "
              "(it is started again after).")
@json_option
@_errors_to_exit
def radio_probe(device: str, stop_ha: bool, as_json: bool) -> None:
    """Identify the Zigbee firmware on DEVICE (e.g. /dev/zigbee) with Home Assistant's own radio
    libraries: EZSP (bellows), Z-Stack (zigpy-znp), deCONZ (zigpy-deconz)."""
    result = _agent("Radio", "Probe", "sb", str(Path(device).absolute()), stop_ha)
    if as_json:
        _echo_json(result)
        return
    click.echo(f"{result['device']}: {result['stack']} firmware {result['firmware']} at "
               f"{result['baudrate']} baud"
               f"{', ' + result['board'] if result.get('board') else ''} ({result['library']})")


@main.group()
def update() -> None:
    """OS updates: signed releases from a channel, installed into the other root slot."""


def _print_release(r: dict[str, Any]) -> None:
    ha = f", Home Assistant {r['homeassistant']}" if r.get("homeassistant") else ""
    click.echo(f"  {r['version']}  ({r['size'] / 2**20:.0f} MiB bundle{ha}, released {r['released_at']})")
    for line in (r.get("notes") or "").splitlines():
        click.echo(f"      {line}")


@update.command(name="check")
@json_option
@_errors_to_exit
def update_check(as_json: bool) -> None:
    """Ask the channel what is newer than this system."""
    data = _agent("Update", "Check")
    if as_json:
        _echo_json(data)
        return
    if not data["available"]:
        click.echo(f"up to date: {data['current']} is the newest on {data['channel']}")
        return
    click.echo(f"running {data['current']}; newer on {data['channel']}:")
    for r in data["available"]:
        _print_release(r)
    click.echo("install the newest with: smartosctl update install")


@update.command(name="install")
@click.option("--version", "version", default="", help="This release instead of the newest.")
@click.option("--allow-downgrade", is_flag=True, help="Allow a release older than the running one.")
@click.option("--no-reboot", is_flag=True, help="Do not reboot into it now (it boots next time).")
@json_option
@_errors_to_exit
def update_install(version: str, allow_downgrade: bool, no_reboot: bool, as_json: bool) -> None:
    """Install a release into the other slot, then reboot into it. Home Assistant must become
    healthy on the new slot, or the device falls back to this one by itself."""
    if not as_json:
        click.echo("checking and installing (streams only what this device lacks; minutes) ...")
    data = _agent("Update", "Install", "sbb", version, allow_downgrade, not no_reboot)
    if as_json:
        _echo_json(data)
        return
    click.echo(f"installed {data['installed']} into slot {data['slot']} in {data['seconds']:.0f} s")
    if data["rebooting"]:
        click.echo("rebooting into it; `smartosctl update status` afterwards says how it went")
    else:
        click.echo("it boots at the next reboot: smartosctl reboot")


@update.command(name="channel")
@click.argument("channel", type=click.Choice(["stable", "beta", "dev"]))
@_errors_to_exit
def update_channel(channel: str) -> None:
    """Follow another release channel (stable, beta, dev)."""
    data = _agent("Update", "Configure", "ss", "channel", channel)
    click.echo(f"channel: {data['channel']}")


@update.command(name="policy")
@click.argument("policy", type=click.Choice(["notify", "install"]))
@_errors_to_exit
def update_policy(policy: str) -> None:
    """What the daily check does with a new release: notify (log it) or install (and reboot)."""
    data = _agent("Update", "Configure", "ss", "policy", policy)
    click.echo(f"policy: {data['policy']}")


@update.command(name="url")
@click.argument("url")
@_errors_to_exit
def update_url(url: str) -> None:
    """Where the release tree is served (the channel and board are appended)."""
    data = _agent("Update", "Configure", "ss", "url", url)
    click.echo(f"url: {data['url']}")


@update.command(name="auto", hidden=True)
@_errors_to_exit
def update_auto() -> None:
    """What the daily timer runs: check, then notify or install by policy."""
    data = _agent("Update", "Auto")
    click.echo(data.get("result") or data.get("skipped"))


@update.command(name="status")
@json_option
@_errors_to_exit
def update_status(as_json: bool) -> None:
    """The running version, the slots, an update in progress, and what happened to the last ones."""
    from .ha_data import describe as describe_ha_data

    data = _agent("Update", "Status")
    if as_json:
        _echo_json(data)
        return
    click.echo(f"SmartOS {data['version']} ({data['board']}), booted from slot {data.get('booted', '?')}")
    click.echo(f"channel {data['channel']}, policy {data['policy']}, "
               f"url {data['url'] or '(none: set one with smartosctl update url)'}")
    if not data["keyring"]:
        click.secho("this image has no update keyring: it refuses every update", fg="yellow")
    if data.get("warning"):
        click.secho(f"warning: {data['warning']}", fg="yellow")
    for name, slot in sorted((data.get("slots") or {}).items()):
        version = slot.get("version") or "as flashed"
        click.echo(f"  slot {name}: {slot.get('state')}, {slot.get('boot_status')}, {version}")
    if data.get("slots_error"):
        click.echo(f"  slots: {data['slots_error']}")
    pending = data.get("pending")
    if pending:
        tries = len(pending.get("attempts", []))
        click.echo(f"pending: {pending['version']} in slot {pending['slot']} ({pending['state']}"
                   f"{f', {tries} boot(s) tried' if tries else ''})")
        for result in (pending.get("ha_data") or {}).values():
            click.echo(f"  {describe_ha_data(result)}")
    if data.get("available"):
        click.echo(f"available: {data['available']['version']} (checked {data['last_check']})")
    for entry in data["history"][:5]:
        why = f": {entry.get('reason') or entry.get('error')}" if entry.get("result") != "installed" else ""
        click.echo(f"  {entry.get('ended_at', '?')}  {entry.get('from', '?')} -> {entry['version']}  "
                   f"{entry['result']}{why}")
        for result in (entry.get("ha_data") or {}).values():
            click.echo(f"      {describe_ha_data(result)}")


@main.command()
@click.option("--to", "target_dir", metavar="DIR", default=".", show_default=True,
              help="Where to write the tarball.")
@json_option
@_errors_to_exit
def diagnostics(target_dir: str, as_json: bool) -> None:
    """A tarball for a bug report: versions, status, journal, hardware, network, firewall and
    configuration, with secrets removed (see the list inside before you share it)."""
    from .diagnostics import save

    if not Path(target_dir).is_dir():
        raise CtlError(f"--to: {target_dir} is not a directory")
    result = save(_agent("Support", "Diagnostics"), Path(target_dir).resolve())
    _echo_json(result) if as_json else click.echo(
        f"{result['path']} ({result['size_bytes'] / 2**20:.1f} MiB, {len(result['files'])} files)")


SHELLS = ("bash", "zsh", "fish")


def completion_script(shell: str) -> str:
    """click's tab-completion script for smartosctl (the image ships the bash one)."""
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    if cls is None:
        raise CtlError(f"expected one of {', '.join(SHELLS)}, got {shell!r}")
    return str(cls(main, {}, "smartosctl", "_SMARTOSCTL_COMPLETE").source())


@main.command()
@click.argument("shell", type=click.Choice(SHELLS), default="bash")
@_errors_to_exit
def completion(shell: str) -> None:
    """Print the tab-completion script for SHELL. Bash logins on the box have it already; for zsh:
    smartosctl completion zsh > ~/.zfunc/_smartosctl"""
    click.echo(completion_script(shell))


@main.command()
@_errors_to_exit
def reboot() -> None:
    """Restart the device."""
    _agent("System", "Reboot")
    click.echo("rebooting")


@main.command()
@_errors_to_exit
def shutdown() -> None:
    """Power the device off."""
    _agent("System", "Shutdown")
    click.echo("shutting down")
