#!/usr/bin/env python3
"""Benchmark: blocking 10,000 IPs, the nft_blocklist module versus one `iptables -A` per IP.

Everything happens inside network namespaces this script creates and deletes (never the
machine's own tables). Times:

  1. the ffmpeg_api.ops.nft_blocklist module run by Ansible (`ansible localhost -m`), adding N
     addresses to an empty set in one `nft -f` transaction (module + Ansible overhead)
  2. the same again, finding every address present (the second run: changed=false)
  3. removing them all (state=absent), one transaction
  4. `iptables -A INPUT -s IP -j DROP` once per address, the runbook's way, in a second
     namespace (pass --iptables N to time fewer and extrapolate)

Usage: .venv/bin/python bench/bench_blocklist.py [--addresses 10000] [--iptables 10000]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
ANSIBLE = os.path.join(REPO, ".venv", "bin", "ansible")


def addresses(n: int) -> list[str]:
    base = int(ipaddress.ip_address("10.0.0.0"))
    # Every other address, so no two merge into a network.
    return [str(ipaddress.ip_address(base + 2 * i + 1)) for i in range(n)]


def module_run(netns: str, addrs: list[str], state: str) -> tuple[float, dict]:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump({"bench_addresses": addrs}, fh)
        varfile = fh.name
    try:
        argv = [
            ANSIBLE,
            "localhost",
            "-i",
            "localhost,",
            "-c",
            "local",
            "-e",
            "ansible_python_interpreter=/usr/bin/python3",
            "-e",
            f"@{varfile}",
            "-m",
            "ffmpeg_api.ops.nft_blocklist",
            "-a",
            json.dumps({"addresses": "{{ bench_addresses }}", "state": state, "netns": netns}),
            "-o",
        ]
        env = {**os.environ, "ANSIBLE_CONFIG": os.path.join(REPO, "ansible.cfg")}
        started = time.perf_counter()
        proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, check=True)
        elapsed = time.perf_counter() - started
        result = json.loads(proc.stdout.split("=>", 1)[1])
        return elapsed, result
    finally:
        os.unlink(varfile)


def set_size(netns: str) -> int:
    out = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            netns,
            "nft",
            "-j",
            "list",
            "set",
            "inet",
            "ffmpeg_api_blocklist",
            "blocked_ipv4",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for item in json.loads(out)["nftables"]:
        if "set" in item:
            return len(item["set"].get("elem", []))
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addresses", type=int, default=10_000)
    parser.add_argument("--iptables", type=int, default=10_000)
    args = parser.parse_args()
    # A fresh machine may have neither firewall tool: say what is missing and stop cleanly
    # rather than crash half-way; without iptables only the baseline is left out.
    if shutil.which("nft") is None:
        print("skipped: bench_blocklist needs nftables (apt-get install nftables)")
        sys.exit(0)
    if shutil.which("iptables") is None:
        print("iptables baseline skipped: iptables is not installed (apt-get install iptables)")
        args.iptables = 0
    addrs = addresses(args.addresses)
    nft_ns, ipt_ns = f"bnft{os.getpid()}", f"bipt{os.getpid()}"
    for ns in (nft_ns, ipt_ns):
        subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        t_add, res = module_run(nft_ns, addrs, "present")
        assert res["changed"] and len(res["added"]) == len(addrs)
        assert set_size(nft_ns) == len(addrs)
        t_again, res = module_run(nft_ns, addrs, "present")
        assert res["changed"] is False
        t_remove, res = module_run(nft_ns, addrs, "absent")
        assert res["changed"] and set_size(nft_ns) == 0
        t_noop, _ = module_run(nft_ns, [], "present")

        n = len(addrs)
        print(f"addresses: {n:,}")
        print(f"module, empty run (Ansible start-up) : {t_noop:7.2f} s")
        print(f"module, block all in one batch       : {t_add:7.2f} s")
        print(f"module, second run (no change)       : {t_again:7.2f} s")
        print(f"module, unblock all in one batch     : {t_remove:7.2f} s")
        n_ipt = min(args.iptables, len(addrs))
        if n_ipt == 0:
            return
        started = time.perf_counter()
        for ip in addrs[:n_ipt]:
            subprocess.run(
                ["ip", "netns", "exec", ipt_ns, "iptables", "-A", "INPUT", "-s", ip, "-j", "DROP"],
                check=True,
            )
        t_ipt = time.perf_counter() - started
        rules = subprocess.run(
            ["ip", "netns", "exec", ipt_ns, "iptables", "-S", "INPUT"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.count("-j DROP")
        assert rules == n_ipt, rules

        per_ip = t_ipt / n_ipt
        print(
            f"iptables -A per IP, {n_ipt:,} rules      : {t_ipt:7.2f} s"
            f"  ({per_ip * 1000:.1f} ms/IP)"
        )
        if n_ipt < n:
            print(
                f"iptables -A per IP, {n:,} (extrapolated, linear; a lower bound):"
                f" {per_ip * n:7.1f} s"
            )
        print(f"speed-up module vs iptables           : {per_ip * n / t_add:7.1f} x")
    finally:
        for ns in (nft_ns, ipt_ns):
            subprocess.run(["ip", "netns", "del", ns], check=False)


if __name__ == "__main__":
    main()
