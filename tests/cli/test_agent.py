"""smartos-agent on a real dbus-daemon (a private one with the image's bus policy): methods
are served with their signatures, the caller is identified from the bus, the policy keeps
everyone else out, failures arrive as named errors, and each state change is audited.

The journald side of the audit log is checked on the booted image (tests/system); here the
agent writes its audit entries to a list."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from smartos_cli import agent, client
from smartos_cli.agent import Caller, Op
from smartos_cli.errors import CtlError, Exit

from tests.conftest import REPO, needs_root

POLICY = REPO / "overlays/common/usr/share/dbus-1/system.d/org.smartos.Agent1.conf"


@pytest.fixture
def system_bus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    needs_root()
    config = tmp_path / "bus.conf"
    config.write_text(f"""<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:abstract=smartos-test-{os.getpid()}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_destination="org.freedesktop.DBus"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
  </policy>
  <include>{POLICY}</include>
</busconfig>
""")
    daemon = subprocess.Popen(["dbus-daemon", "--nofork", f"--config-file={config}", "--print-address"],
                              stdout=subprocess.PIPE, text=True)
    assert daemon.stdout is not None
    address = daemon.stdout.readline().strip()
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", address)
    try:
        yield address
    finally:
        daemon.terminate()
        daemon.wait()


def _echo(caller: Caller, text: str, times: int) -> dict[str, Any]:
    return {"caller": caller.name, "uid": caller.uid, "text": text * times}


def _refuse(caller: Caller, name: str) -> None:
    raise CtlError(f"no peer named {name!r}", hint="see smartosctl vpn show")


OPS = [Op("Firewall", "Echo", (("text", "s"), ("times", "u")), _echo),
       Op("Vpn", "Remove", (("name", "s"),), _refuse),
       Op("System", "Peek", (), lambda caller: {"ok": True}, audited=False)]


@pytest.fixture
def running_agent(system_bus: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    audited: list[dict[str, Any]] = []

    def record(action: str, caller: str, uid: int, args: dict[str, Any], result: str) -> dict[str, Any]:
        entry = {"action": action, "caller": caller, "uid": uid, "args": args, "result": result}
        audited.append(entry)
        return entry

    monkeypatch.setattr(agent.audit, "record", record)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    ready = threading.Event()

    async def main() -> None:
        task = asyncio.create_task(agent.serve(OPS, stop))
        while not ready.is_set():
            await asyncio.sleep(0.05)
            ready.set() if _owned() else None
        await task

    def _owned() -> bool:
        out = subprocess.run(["busctl", "--address", system_bus, "list", "--no-legend"],
                             capture_output=True, text=True).stdout
        return agent.BUS_NAME in out

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(10), "the agent did not take its bus name"
    yield audited
    loop.call_soon_threadsafe(stop.set)
    thread.join(10)


def test_a_call_runs_as_the_identified_caller_and_is_audited(running_agent: list[dict[str, Any]]) -> None:
    assert client.call("Firewall", "Echo", "su", "ab", 3) == {"caller": "root", "uid": 0, "text": "ababab"}
    assert running_agent == [{"action": "firewall.echo", "caller": "root", "uid": 0,
                              "args": {"text": "ab", "times": 3}, "result": "ok"}]
    assert client.call("System", "Peek") == {"ok": True}
    assert len(running_agent) == 1  # read-only calls leave no audit entry


def test_a_refusal_arrives_as_a_named_error_and_is_audited(running_agent: list[dict[str, Any]]) -> None:
    with pytest.raises(CtlError) as err:
        client.call("Vpn", "Remove", "s", "phone")
    assert err.value.code is Exit.BAD_INPUT
    assert err.value.message == "no peer named 'phone'" and err.value.hint == "see smartosctl vpn show"
    assert running_agent[-1]["result"] == "error: no peer named 'phone'"


def test_wrong_signature_and_unknown_method_are_refused(running_agent: list[dict[str, Any]]) -> None:
    with pytest.raises(CtlError, match="Echo takes \\(su\\), got \\(s\\)"):
        client.call("Firewall", "Echo", "s", "ab")
    with pytest.raises(CtlError, match="UnknownMethod"):
        client.call("Firewall", "Flush")
    assert running_agent == []


def test_introspection_lists_the_interfaces(system_bus: str, running_agent: list[dict[str, Any]]) -> None:
    out = subprocess.run(["busctl", "--address", system_bus, "introspect", agent.BUS_NAME, agent.PATH],
                         capture_output=True, text=True, check=True).stdout
    assert "org.smartos.Agent1.Firewall" in out and ".Echo" in out and "su" in out


def test_the_bus_policy_keeps_other_users_out(running_agent: list[dict[str, Any]]) -> None:
    """An ordinary user (nobody) is refused by the bus itself, before the agent sees the call."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child becomes nobody and calls
        os.close(read_end)
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            client.call("System", "Peek")
            message = "ALLOWED"
        except CtlError as exc:
            message = f"{exc.code.name} {exc.message}"
        except BaseException as exc:
            message = repr(exc)
        os.write(write_end, message.encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as fh:
        out = fh.read()
    os.waitpid(pid, 0)
    assert out.startswith("NOT_ALLOWED not allowed"), out
    assert running_agent == []


def test_no_agent_is_reported_with_the_command_that_starts_it(system_bus: str) -> None:
    with pytest.raises(CtlError) as err:
        client.call("System", "Peek")
    assert err.value.code is Exit.UNAVAILABLE and "systemctl start smartos-agent" in (err.value.hint or "")


def test_the_device_ops_match_their_functions() -> None:
    """Every op the device serves names arguments its function takes, with D-Bus types."""
    import inspect

    from smartos_cli.ops import OPS as DEVICE_OPS

    for op in DEVICE_OPS:
        params = list(inspect.signature(op.fn).parameters)[1:]
        assert params == [name for name, _ in op.args], op
    assert json.loads(json.dumps([op.action for op in DEVICE_OPS]))


def test_the_bus_policy_in_the_image_is_the_one_the_ops_table_renders() -> None:
    """One source for who may call what: the policy file is agent.bus_policy(OPS), and Home
    Assistant's user is let through to exactly the ops marked `integration`."""
    from smartos_cli.ops import OPS as DEVICE_OPS

    assert POLICY.read_text() == agent.bus_policy(DEVICE_OPS), \
        "regenerate: PYTHONPATH=cli python3 -m smartos_cli.agent --policy > " + str(POLICY.relative_to(REPO))
    assert sorted(f"{op.area}.{op.name}" for op in DEVICE_OPS if op.integration) == [
        "Backup.CreateDefault", "HomeAssistant.Restart", "System.Reboot", "System.Shutdown",
        "Update.Check", "Update.InstallNewest", "Update.Status"]


def test_home_assistants_user_passes_only_for_integration_ops(monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent's own check behind the bus policy (the uid comes from the bus)."""
    import grp
    import pwd

    monkeypatch.setattr(grp, "getgrnam", lambda name: grp.struct_group(("smartos-admin", "x", 4242, ["ada"])))
    monkeypatch.setattr(pwd, "getpwuid", lambda uid: pwd.struct_passwd(
        ("homeassistant", "x", uid, uid, "", "/data/homeassistant", "/usr/sbin/nologin")))
    from smartos_cli.ops import OPS as DEVICE_OPS

    ha = Caller(8123, "homeassistant")
    by_name = {f"{op.area}.{op.name}": op for op in DEVICE_OPS}
    assert agent.allowed(ha, by_name["Update.InstallNewest"])
    for refused in ("Backup.Restore", "Backup.Create", "Backup.Key", "Backup.Delete", "Update.Install",
                    "Update.Configure", "Firewall.Allow", "Vpn.Show", "Radio.Probe",
                    "HomeAssistant.CheckConfig",
                    "HomeAssistant.Control", "Support.Diagnostics", "Network.SetWifi"):
        assert not agent.allowed(ha, by_name[refused]), refused
    assert agent.allowed(Caller(0, "root"), by_name["Backup.Restore"])
