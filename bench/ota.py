#!/usr/bin/env python3
"""SmartOS update benchmarks (x86-64, QEMU TCG): bundle size, what a patch release downloads,
install time, and power cuts during an install.

    sudo ~/.cache/smartos/venv/bin/python bench/ota.py [--cuts 5]

  release      `smartos release` of 0.2.0 and of 0.2.1, which differs by one added Debian
               package (htop): time and bundle size
  patch        the 0.2.0 image booted in QEMU installs 0.2.1 from a local HTTP server (Range
               requests, 127.0.0.1): bytes the server sent, as a share of the full bundle, and
               the install time (RAUC's adaptive block-hash-index over HTTP streaming)
  power cuts   N times: start installing, kill QEMU at a random moment, boot again; counts the
               boots that came up on the running slot with Home Assistant answering, and
               whether an install afterwards succeeded
Throwaway signing keys and the release tree live in a temporary directory.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "smartos"
KEY = CACHE / "test-key" / "id_ed25519"
SSH_PORT, HTTP_PORT = 2250, 8150


def smartos(*args: str) -> None:
    subprocess.run([str(Path(sys.executable).parent / "smartos"), *args], check=True)


def ssh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ssh", "-i", str(KEY), "-p", str(SSH_PORT), "-o", "StrictHostKeyChecking=no",
                           "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
                           "-o", "ConnectTimeout=10", "admin@127.0.0.1", *cmd],
                          text=True, capture_output=True, check=check)


def wait_status(predicate, timeout: float) -> dict:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        out = ssh("smartosctl update status --json", check=False)
        if out.returncode == 0 and predicate(status := json.loads(out.stdout)):
            return status  # type: ignore[no-any-return]
        time.sleep(10)
    raise SystemExit(f"no expected update status within {timeout:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cuts", type=int, default=5)
    args = parser.parse_args()
    from smartos_image.vm import Machine

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
    # the device runs 0.2.0; only 0.2.1 is offered
    (tree / "stable/x86-64/index.json").write_text(json.dumps(
        index | {"releases": [r for r in index["releases"] if r["version"] == "0.2.1"]}))
    image = work / "out-0.2.0" / "smartos-0.2.0-x86-64.img"
    with ReleaseServer(tree) as server:
        machine = Machine(image, work / "vm", ssh_port=SSH_PORT, http_port=HTTP_PORT, restrict=True,
                          disk_size="8G", guest_forwards=((8080, server.port),))
        machine.start()
        try:
            machine.wait_for_port(SSH_PORT, 600)
            machine.wait_for_http(f"http://127.0.0.1:{HTTP_PORT}/manifest.json", 900)
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
            # power cuts: the slot just written is primary now; put the running one back first
            ssh("sudo rauc status mark-active booted")
            good = 0
            for n in range(args.cuts):
                proc = subprocess.Popen(["ssh", "-i", str(KEY), "-p", str(SSH_PORT), "-o",
                                         "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                                         "admin@127.0.0.1", "smartosctl update install --no-reboot"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                cut = random.uniform(3, max(10.0, installed["seconds"] * 0.8))
                time.sleep(cut)
                assert machine.proc is not None
                machine.proc.kill()
                machine.proc.wait()
                machine.proc = None
                proc.wait()
                machine.start()
                machine.wait_for_port(SSH_PORT, 600)
                status = wait_status(lambda s: s["pending"] is None, 900)
                machine.wait_for_http(f"http://127.0.0.1:{HTTP_PORT}/manifest.json", 900)
                ok = status["booted"] == "A" and status["version"] == "0.2.0"
                good += ok
                print(f"cut {n + 1} after {cut:.0f} s: booted slot {status['booted']} "
                      f"{status['version']}, last attempt {status['history'][0]['result']}", flush=True)
                if not ok:
                    break
            final = ssh("smartosctl update install --no-reboot", check=False)
            results |= {"power_cuts": args.cuts, "power_cuts_good_boots": good,
                        "install_after_cuts": final.returncode == 0}
            print(f"power cuts: {good}/{args.cuts} came back on the running slot with Home Assistant; "
                  f"install afterwards: {'ok' if final.returncode == 0 else final.stderr}", flush=True)
        finally:
            machine.stop()
    results["firmware_hang_resets"] = machine.hangs
    print(json.dumps(results, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
