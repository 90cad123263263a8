"""DDoS response: blocked addresses cannot reach a server, unblocked ones can.

The firewall under test lives in network namespaces this test creates (never the machine's own
tables): a server namespace running a tiny TCP server behind the playbook's nftables set, and a
client namespace joined to it by a veth pair, holding several source addresses. The busiest
client comes from an access log in HAProxy's format that the test writes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from runbook_helpers import admin, assert_second_run_changes_nothing, playbook

SERVER_NS = f"fwsrv{os.getpid()}"
CLIENT_NS = f"fwcli{os.getpid()}"
SERVER_IP = "10.77.0.1"
ATTACKER = "10.77.0.2"  # blocked by name
FLOODER = "10.77.0.4"  # blocked because the log shows it over the threshold
BYSTANDER = "10.77.0.3"  # never blocked for good
PORT = 9099

SERVER = (
    f"PORT = {PORT}\n"
    """
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", PORT))
s.listen(64)
while True:
    c, _ = s.accept()
    c.sendall(b"ok")
    c.close()
"""
)

CLIENT = """
import socket, sys
try:
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1.5,
                                 source_address=(sys.argv[3], 0))
    print(c.recv(2).decode())
except OSError:
    print("blocked")
"""


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def can_connect(source: str) -> bool:
    out = sh(
        "ip", "netns", "exec", CLIENT_NS, sys.executable, "-c", CLIENT, SERVER_IP, str(PORT), source
    )
    return out.strip() == "ok"


def reachability() -> dict[str, bool]:
    return {ip: can_connect(ip) for ip in (ATTACKER, BYSTANDER, FLOODER)}


def ruleset() -> str:
    return sh("ip", "netns", "exec", SERVER_NS, "nft", "list", "ruleset")


def ddos_mode() -> bool:
    return admin("ratelimit", "get")["ddos_protection"]


@pytest.fixture
def namespaces():
    subprocess.run(["ip", "netns", "del", SERVER_NS], capture_output=True)
    subprocess.run(["ip", "netns", "del", CLIENT_NS], capture_output=True)
    server = None
    try:
        sh("ip", "netns", "add", SERVER_NS)
        sh("ip", "netns", "add", CLIENT_NS)
        sh(
            "ip",
            "link",
            "add",
            "vfw-s",
            "netns",
            SERVER_NS,
            "type",
            "veth",
            "peer",
            "vfw-c",
            "netns",
            CLIENT_NS,
        )
        sh("ip", "-n", SERVER_NS, "addr", "add", f"{SERVER_IP}/24", "dev", "vfw-s")
        for ip in (ATTACKER, BYSTANDER, FLOODER):
            sh("ip", "-n", CLIENT_NS, "addr", "add", f"{ip}/24", "dev", "vfw-c")
        for ns, dev in ((SERVER_NS, "vfw-s"), (CLIENT_NS, "vfw-c")):
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        server = subprocess.Popen(["ip", "netns", "exec", SERVER_NS, sys.executable, "-c", SERVER])
        deadline = time.monotonic() + 10
        while not can_connect(BYSTANDER):
            assert time.monotonic() < deadline, "the test server in the namespace never answered"
            time.sleep(0.2)
        yield
    finally:
        if server is not None:
            server.kill()
            server.wait()
        subprocess.run(["ip", "netns", "del", SERVER_NS], capture_output=True)
        subprocess.run(["ip", "netns", "del", CLIENT_NS], capture_output=True)


@pytest.fixture
def access_log(tmp_path):
    """An HAProxy access log: the flooder sends 300 requests (mostly 429), others a few."""
    now = time.strftime("%d/%b/%Y:%H:%M:%S", time.localtime())
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S+00:00")
    lines = []
    for i, (ip, status) in enumerate(
        [(FLOODER, 429)] * 280 + [(FLOODER, 200)] * 20 + [(BYSTANDER, 200)] * 5
    ):
        lines.append(
            f"{stamp} lb haproxy[42]: {ip}:{40000 + i} [{now}.{i % 1000:03d}] ffmpeg_api_front "
            f"ffmpeg_api/localhost 0/0/0/3/3 {status} 120 - - ---- 1/1/0/0/0 0/0 "
            f'"GET /api/v1/jobs HTTP/1.1"\n'
        )
    # An old burst outside the window must not count.
    lines.append(
        f"{stamp} lb haproxy[42]: {BYSTANDER}:1 [01/Jan/2020:00:00:00.000] ffmpeg_api_front "
        'ffmpeg_api/localhost 0/0/0/3/3 200 120 - - ---- 1/1/0/0/0 0/0 "GET / HTTP/1.1"\n'
    )
    path = tmp_path / "haproxy.log"
    path.write_text("".join(lines))
    return str(path)


def test_ddos_response_blocks_and_unblocks(stack, namespaces, access_log):
    ddos_before = ddos_mode()
    block = {
        "ddos_block": [ATTACKER],
        "ddos_threshold": 100,
        "ddos_window": "10m",
        "ddos_access_log": access_log,
        "firewall_netns": SERVER_NS,
        "ddos_protection": True,
    }
    try:
        # Fault: the attack is on, every source reaches the server.
        assert reachability() == {ATTACKER: True, BYSTANDER: True, FLOODER: True}
        rules_before, ddos_mode_before = ruleset(), ddos_mode()

        preview = playbook("ddos_response.yml", extra_vars=block, check=True)
        assert ruleset() == rules_before, "check mode changed the namespace's ruleset"
        assert ddos_mode() == ddos_mode_before, "check mode changed DDoS-protection mode"
        assert reachability() == {ATTACKER: True, BYSTANDER: True, FLOODER: True}
        assert preview.changed >= 1, preview.out[-3000:]

        run = playbook("ddos_response.yml", extra_vars=block)
        assert FLOODER in run.out and "300" in run.out, "the busiest client was not reported"
        assert reachability() == {ATTACKER: False, BYSTANDER: True, FLOODER: False}
        assert ddos_mode() is True
        assert "blocked_ipv4" in ruleset()
        assert_second_run_changes_nothing("ddos_response.yml", extra_vars=block)

        # Unblock the address blocked by name and switch protection off; the flooder stays out.
        unblock = {
            "ddos_unblock": [ATTACKER],
            "firewall_netns": SERVER_NS,
            "ddos_protection": False,
        }
        rules_blocked = ruleset()
        playbook("ddos_response.yml", extra_vars=unblock, check=True)
        assert ruleset() == rules_blocked
        assert ddos_mode() is True
        playbook("ddos_response.yml", extra_vars=unblock)
        assert reachability() == {ATTACKER: True, BYSTANDER: True, FLOODER: False}
        assert ddos_mode() is False
        assert_second_run_changes_nothing("ddos_response.yml", extra_vars=unblock)

        # An expiring block lifts by itself.
        expiring = {
            "ddos_block": [BYSTANDER],
            "ddos_block_timeout": "3s",
            "firewall_netns": SERVER_NS,
            "ddos_protection": False,
        }
        playbook("ddos_response.yml", extra_vars=expiring)
        assert not can_connect(BYSTANDER)
        time.sleep(4)
        assert can_connect(BYSTANDER)
        assert not can_connect(FLOODER)
    finally:
        admin("ratelimit", "ddos", "on" if ddos_before else "off")


def test_bad_input_fails_early(stack):
    run = playbook("ddos_response.yml", extra_vars={"ddos_block": ["not-an-ip"]}, expect_rc=2)
    assert "ddos_block and ddos_unblock must be lists of IPv4" in run.out
