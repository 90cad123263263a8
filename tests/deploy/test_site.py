"""playbooks/site.yml against this machine through inventories/local: a real deployment.

The first run deploys (and smoke-tests through HAProxy); the second must change nothing; a
check-mode run on the deployed stack must report nothing to change. Then the deployed stack
is probed from outside: HAProxy routes to the API, Prometheus scrapes the service.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.request

import pytest
from helpers import monitoring_auth

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECAP = re.compile(
    r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="deploys system services: needs root")


def site(*args: str, timeout: int = 1500) -> tuple[str, dict, float]:
    started = time.monotonic()
    proc = subprocess.run(
        [os.path.join(REPO, "playbooks", "deploy-local"), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1"},
    )
    elapsed = time.monotonic() - started
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    recap = {
        m.group(1): {"changed": int(m.group(3)), "failed": int(m.group(5))}
        for m in RECAP.finditer(out)
    }
    assert recap, out[-3000:]
    return out, recap, elapsed


def changed_tasks(out: str) -> list[str]:
    """Names of the tasks that reported a change (for a readable failure)."""
    names, current = [], None
    for line in out.splitlines():
        if line.startswith(("TASK [", "RUNNING HANDLER [")):
            current = line
        elif line.startswith("changed:") and current:
            names.append(current)
    return names


@pytest.fixture(scope="module")
def deployed():
    out, _recap, elapsed = site()
    print(f"first deploy: {elapsed:.0f} s")
    return out


def test_first_deploy_ends_with_a_smoke_test(deployed):
    assert "smoke job" in deployed and "completed, output h264,240" in deployed


def test_second_run_changes_nothing(deployed):
    out, recap, elapsed = site()
    print(f"idempotent re-run: {elapsed:.0f} s")
    assert all(h["changed"] == 0 for h in recap.values()), changed_tasks(out)


def test_check_mode_on_deployed_stack_changes_nothing(deployed):
    out, recap, _ = site("--check")
    assert all(h["changed"] == 0 for h in recap.values()), changed_tasks(out)


def _admin(*args: str) -> dict:
    """The deployed admin CLI, with --json."""
    proc = subprocess.run(
        ["/usr/local/bin/ffmpeg-api-admin", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def _get(url: str, headers: dict | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_haproxy_routes_to_the_api_and_checks_its_health(deployed):
    status, body = _get("http://127.0.0.1:8080/api/v1/health")
    assert status == 200, body
    assert set(json.loads(body)) == {"status"}, body  # the components are for operators
    key = _admin("keys", "create", "--user", "deploy-test", "--name", "health")
    try:
        status, body = _get("http://127.0.0.1:8080/api/v1/health", {"X-API-Key": key["api_key"]})
    finally:
        _admin("keys", "revoke", str(key["id"]))
    assert status == 200, body
    health = json.loads(body)
    assert health["components"]["workers"]["cpu"]["alive"] == 2
    assert health["components"]["database"]["status"] == "ok"
    status, metrics = _get("http://127.0.0.1:8404/metrics")
    assert status == 200
    up = rb'haproxy_server_status\{proxy="ffmpeg_api",server="localhost",state="UP"\} 1'
    assert re.search(up, metrics), metrics[:2000]


def test_prometheus_scrapes_the_service(deployed):
    deadline = time.monotonic() + 60
    while True:
        status, body = _get("http://127.0.0.1:9090/api/v1/targets", monitoring_auth())
        targets = json.loads(body)["data"]["activeTargets"] if status == 200 else []
        up = {t["labels"]["job"] for t in targets if t["health"] == "up"}
        if {"ffmpeg_api", "node", "haproxy"} <= up or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert {"ffmpeg_api", "node", "haproxy"} <= up, targets
