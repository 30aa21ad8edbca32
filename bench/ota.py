#!/usr/bin/env python3
"""SmartOS update benchmarks (x86-64, QEMU TCG): bundle size, what a patch release downloads,
install time, and power cuts during an install.

    sudo ~/.cache/smartos/venv/bin/python bench/ota.py [--cuts 5]

  release      `smartos release` of 0.2.0 and of 0.2.1, which differs by one added Debian
               package (htop): time and bundle size
  patch        the 0.2.0 image booted in QEMU installs 0.2.1 from a local HTTP server (Range
               requests, 127.0.0.1): bytes the server sent, as a share of the full bundle, and
               the install time (RAUC's adaptive block-hash-index over HTTP streaming)
  power cuts   on a fresh device, N times: start installing, kill QEMU once RAUC's progress
               reaches a random percentage, boot again; counts the boots that came up on the
               running slot with Home Assistant answering and the attempt recorded as
               interrupted, and whether an install afterwards succeeded
Throwaway signing keys and the release tree live in a temporary directory.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "smartos"
KEY = CACHE / "test-key" / "id_ed25519"
SSH_PORT, HTTP_PORT = 2250, 8150


def smartos(*args: str) -> None:
    subprocess.run([str(Path(sys.executable).parent / "smartos"), *args], check=True)


SSH = ["ssh", "-i", str(KEY), "-p", str(SSH_PORT), "-o", "StrictHostKeyChecking=no",
       "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10",
       "admin@127.0.0.1"]


def ssh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SSH, *cmd], text=True, capture_output=True, check=check)


@contextlib.contextmanager
def booted(image: Path, workdir: Path, server_port: int, hangs: list[str]) -> Iterator[Any]:
    """A fresh device (its own overlay of the image) booted, Home Assistant answering."""
    from smartos_image.vm import Machine

    machine = Machine(image, workdir, ssh_port=SSH_PORT, http_port=HTTP_PORT, restrict=True,
                      disk_size="8G", guest_forwards=((8080, server_port),))
    machine.start()
    try:
        machine.wait_for_port(SSH_PORT, 600)
        machine.wait_for_http(f"http://127.0.0.1:{HTTP_PORT}/manifest.json", 900)
        yield machine
    finally:
        machine.stop()
        hangs.extend(machine.hangs)


def wait_progress(target: float, install: subprocess.Popen[bytes]) -> str:
    """Poll RAUC's progress until it reaches target percent; what it was doing then."""
    start = time.monotonic()
    while time.monotonic() - start < 900:
        out = ssh("sudo busctl get-property de.pengutronix.rauc / de.pengutronix.rauc.Installer Progress",
                  check=False).stdout.split(maxsplit=2)  # (isi) 45 "Copying image to rootfs.1" 2
        if len(out) == 3 and int(out[1]) >= target:
            return f"{out[1]}% ({out[2].rsplit(' ', 1)[0]})"
        if install.poll() is not None:
            raise SystemExit(f"the install ended before {target:.0f}% (exit {install.returncode})")
        time.sleep(1)
    raise SystemExit(f"RAUC did not reach {target:.0f}% within 900 s")


def wait_status(predicate: Callable[[dict[str, Any]], Any], timeout: float) -> dict[str, Any]:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        out = ssh("smartosctl update status --json", check=False)
        if out.returncode == 0 and predicate(status := dict(json.loads(out.stdout))):
            return status
        time.sleep(10)
    raise SystemExit(f"no expected update status within {timeout:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cuts", type=int, default=5)
    args = parser.parse_args()
    from tests.system.release_server import ReleaseServer

    work = Path(tempfile.mkdtemp(prefix="smartos-bench-ota-", dir=CACHE))
    keys, tree = work / "keys", work / "tree"
    smartos("keys", "init", "--dir", str(keys), "--organization", "SmartOS bench")
    common = ["--set", f"admin.ssh_key_files=[{KEY}.pub]", "--set", "compress=false",
              "--set", f"update.keyring={keys}/ca.cert.pem", "--set", "update.url=http://10.0.2.100:8080"]
    results: dict[str, object] = {"date": time.strftime("%Y-%m-%d"), "machine": platform.processor()
                                  or platform.machine(), "cpus": os.cpu_count()}
    timings = {}
    for version, extra in (("0.2.0", []), ("0.2.1", ["--set", "extra_packages=[htop]"])):
        start = time.monotonic()
        smartos(*common, "--set", f"version={version}", "--set", f"output_dir={work}/out-{version}",
                *extra, "release", "--channel", "stable", "--to", str(tree), "--keys", str(keys))
        timings[version] = round(time.monotonic() - start, 1)
    index = json.loads((tree / "stable/x86-64/index.json").read_text())
    sizes = {r["version"]: r["size"] for r in index["releases"]}
    results |= {"release_s": timings, "bundle_mib": {v: round(s / 2**20, 1) for v, s in sizes.items()}}
    print(f"release: {timings} s; bundles {results['bundle_mib']} MiB", flush=True)
    # the device runs 0.2.0; only 0.2.1 is offered (re-signed: the device verifies the index)
    from smartos_cli import channel_index
    from smartos_image import keys as keys_lib
    from smartos_image import release as release_lib

    index_file = tree / "stable/x86-64/index.json"
    published = channel_index.parse(index_file.read_bytes())
    release_lib.sign_index(dataclasses.replace(
        published, sequence=published.sequence + 1,
        releases=tuple(r for r in published.releases if r.version == "0.2.1")),
        index_file, keys_lib.Keys(keys))
    image = work / "out-0.2.0" / "smartos-0.2.0-x86-64.img"
    hangs: list[str] = []
    with ReleaseServer(tree) as server:
        # the patch release on a fresh device (0.2.0 in slot A, slot B as flashed)
        with booted(image, work / "vm-patch", server.port, hangs):
            server.stats.reset()
            out = ssh("smartosctl update install --no-reboot --json")
            installed = json.loads(out.stdout)
            sent = server.stats.bytes_sent
            results |= {"patch_download_mib": round(sent / 2**20, 1),
                        "patch_ratio_pct": round(100 * sent / sizes["0.2.1"], 1),
                        "patch_install_s": installed["seconds"]}
            print(f"patch 0.2.0 -> 0.2.1: downloaded {sent / 2**20:.1f} MiB of a "
                  f"{sizes['0.2.1'] / 2**20:.1f} MiB bundle ({results['patch_ratio_pct']}%), "
                  f"install {installed['seconds']:.0f} s", flush=True)
            # where the install's time went, from RAUC's own log
            print(ssh("journalctl -b -u rauc -o short-monotonic --no-pager | tail -n 25", check=False).stdout,
                  flush=True)
        # power cuts on another fresh device, each at a random point of RAUC's progress
        with booted(image, work / "vm-cuts", server.port, hangs) as machine:
            good = 0
            for n in range(args.cuts):
                target = random.uniform(5, 95)
                proc = subprocess.Popen([*SSH, "smartosctl update install --no-reboot"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                at = wait_progress(target, proc)
                machine.power_cut()
                proc.wait()
                machine.wait_for_port(SSH_PORT, 600)
                status = wait_status(lambda s: s["pending"] is None and s["history"], 900)
                machine.wait_for_http(f"http://127.0.0.1:{HTTP_PORT}/manifest.json", 900)
                last = status["history"][0]["result"]
                ok = status["booted"] == "A" and status["version"] == "0.2.0" and last == "interrupted"
                good += ok
                print(f"cut {n + 1} at {at}: booted slot {status['booted']} {status['version']}, "
                      f"Home Assistant answering, last attempt {last}", flush=True)
            start = time.monotonic()
            final = ssh("smartosctl update install --no-reboot", check=False)
            results |= {"power_cuts": args.cuts, "power_cuts_good_boots": good,
                        "install_after_cuts": final.returncode == 0,
                        "install_after_cuts_s": round(time.monotonic() - start)}
            print(f"power cuts: {good}/{args.cuts} came back on the running slot with Home Assistant; "
                  f"install afterwards: {'ok' if final.returncode == 0 else final.stderr} "
                  f"in {results['install_after_cuts_s']} s", flush=True)
    results["firmware_hang_resets"] = hangs
    print(json.dumps(results, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
