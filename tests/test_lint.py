"""The builder stays ruff- and mypy-clean (STYLE.md); nothing but image/run.py spawns programs."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def test_ruff() -> None:
    result = subprocess.run([str(BIN / "ruff"), "check", "--output-format", "concise", "."],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy() -> None:
    result = subprocess.run([str(BIN / "mypy")], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ansible_syntax() -> None:
    result = subprocess.run([str(BIN / "ansible-playbook"), "--syntax-check", "-i", "localhost,",
                             "roles/site.yml"], cwd=REPO, capture_output=True, text=True,
                            env={"ANSIBLE_ROLES_PATH": str(REPO / "roles"), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stdout + result.stderr
