"""The same roles the image was built from, applied to the running box over ssh (inventory
style, as a fleet admin would): they change nothing, because the image build already applied
them (in the root tree) and the box is what they describe. One run proves idempotence against
the build's own run, and also that nothing after the roles (overlays, first boot, tmpfiles)
fights them."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.vm
REPO = Path(__file__).resolve().parents[2]


def apply_roles(ssh_key: Path, tmp_path: Path, board: str, ssh_port: int) -> str:
    inventory = tmp_path / "inventory.ini"
    inventory.write_text(
        f"[smartos]\nvm ansible_host=127.0.0.1 ansible_port={ssh_port} ansible_user=admin "
        f"ansible_ssh_private_key_file={ssh_key} "
        "ansible_ssh_common_args='-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null'\n"
        "[smartos:vars]\nansible_python_interpreter=/usr/bin/python3\n")
    # What the image build passed, as a fleet's host_vars would.
    extra = {"base__hostname": "smartos-test", "base__board": board, "ssh__admin_user": "admin",
             "ssh__authorized_keys": [Path(f"{ssh_key}.pub").read_text().strip()]}
    # Mitogen's strategy keeps one Python on the device for the whole run instead of starting
    # one per task over ssh: under TCG each start costs seconds (the run: 35 s instead of
    # minutes, docs/benchmarks.md). The modules, their arguments and results are Ansible's own.
    import ansible_mitogen

    strategies = Path(ansible_mitogen.__file__).parent / "plugins" / "strategy"
    env = dict(os.environ, ANSIBLE_ROLES_PATH=str(REPO / "roles"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_PIPELINING="1", ANSIBLE_HOST_KEY_CHECKING="0",
               ANSIBLE_STRATEGY_PLUGINS=str(strategies), ANSIBLE_STRATEGY="mitogen_linear")
    playbook = Path(sys.executable).parent / "ansible-playbook"
    result = subprocess.run([str(playbook), "-i", str(inventory), str(REPO / "roles/site.yml"),
                             "-e", json.dumps(extra)], capture_output=True, text=True, env=env,
                            timeout=1200)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    return result.stdout


def test_roles_apply_to_the_running_device_idempotently(host, vm, board, ssh_key: Path,
                                                        tmp_path: Path) -> None:
    output = apply_roles(ssh_key, tmp_path, board, vm.ssh_port)
    recap = re.search(r"^vm\s+:.*$", output, re.MULTILINE)
    assert recap, output[-2000:]
    changed = [task.strip() for task in output.split("TASK [") if "\nchanged: " in task]
    assert "changed=0" in recap.group(0), f"{recap.group(0)}\n" + "\n".join(changed)
    assert "failed=0" in recap.group(0)
    assert host.service("smartos.service").is_running
