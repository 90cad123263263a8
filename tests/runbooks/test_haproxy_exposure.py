"""What the deployed HAProxy (inventories/local) lets a client do to the API and see of it.

- Slow uploads must not starve the API: uploads hold at most a bounded share of each server's
  gunicorn processes, and one client only a few uploads at a time (issue 14, item 3).
- A client cannot forge its address: on this machine HAProxy connects to the API from its own
  loopback address, the only one the API trusts with X-Forwarded-For (item 7).
- The stats page listens on loopback only and asks for a password; the API's /metrics (which
  lists key ids) is not served through the public frontend (items 7 and 9).

Clients here take their own loopback source addresses (127.0.0.3 and up), so that HAProxy's
per-client tables see them as distinct clients and nothing they do counts against 127.0.0.1.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import threading
import time
import uuid

import pytest
from runbook_helpers import REPO, admin, wait_for

LB = ("127.0.0.1", 8080)
API_DIRECT = ("127.0.0.1", 8000)
STATS = ("127.0.0.1", 8404)
ACCESS_LOG = "/var/log/ffmpeg-api/access.log"
STATS_PASSWORD_FILE = os.path.join(REPO, "var", "secrets", "haproxy_stats_password")

UPLOADER = "127.0.0.3"
PROBER = "127.0.0.4"
FORGER = "127.0.0.5"

SLOW_UPLOADS = 12
# Each upload: CHUNKS chunks of CHUNK bytes, one every INTERVAL s (about 10 s in all). More
# than HAProxy's 16 KiB request buffer, so buffering alone cannot hide a slow body.
CHUNK = 2048
CHUNKS = 20
INTERVAL = 0.5


def request(
    target: tuple[str, int],
    method: str,
    path: str,
    headers: dict | None = None,
    *,
    source: str = "127.0.0.1",
    timeout: float = 15.0,
) -> tuple[int, dict, bytes]:
    """One HTTP/1.1 request from a chosen loopback source address: (status, headers, body)."""
    head = {"Host": f"{target[0]}:{target[1]}", "Connection": "close", **(headers or {})}
    raw = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in head.items())
    with socket.create_connection(target, timeout=timeout, source_address=(source, 0)) as sock:
        sock.sendall((raw + "\r\n").encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    header_blob, _, body = data.partition(b"\r\n\r\n")
    lines = header_blob.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    parsed = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    return status, parsed, body


def slow_upload(key: str, index: int, results: list) -> None:
    """POST /files with a body trickled over about CHUNKS x INTERVAL seconds; appends the status
    (or the error that ended it) to results."""
    length = CHUNK * CHUNKS
    head = (
        f"POST /api/v1/files?name=slow-{index}.bin HTTP/1.1\r\n"
        f"Host: {LB[0]}:{LB[1]}\r\nX-API-Key: {key}\r\nConnection: close\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {length}\r\n\r\n"
    )
    try:
        with socket.create_connection(LB, timeout=60, source_address=(UPLOADER, 0)) as sock:
            sock.sendall(head.encode())
            try:
                for _ in range(CHUNKS):
                    sock.sendall(b"\0" * CHUNK)
                    time.sleep(INTERVAL)
            except OSError:
                pass  # answered early (429) and closed: read that answer below
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        results.append(int(data.split(b" ", 2)[1]) if data else "no answer")
    except OSError as exc:
        results.append(type(exc).__name__)


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


@pytest.fixture
def two_keys(stack):
    """Keys of two throw-away users: the uploader's and the other client's; revoked afterwards."""
    tag = f"{os.getpid()}-{time.monotonic_ns()}"
    created = [
        admin("keys", "create", "--user", f"exposure-{who}-{tag}", "--name", "exposure")
        for who in ("uploader", "prober")
    ]
    yield [c["api_key"] for c in created]
    for c in created:
        subprocess.run(["/usr/local/bin/ffmpeg-api-admin", "keys", "revoke", str(c["id"])])


def test_slow_uploads_do_not_starve_other_clients(two_keys):
    upload_key, probe_key = two_keys
    outcomes: list = []
    uploads = [
        threading.Thread(target=slow_upload, args=(upload_key, i, outcomes))
        for i in range(SLOW_UPLOADS)
    ]
    for t in uploads:
        t.start()
    time.sleep(1.0)  # every upload is connected and trickling

    latencies, failures = [], []
    deadline = time.monotonic() + CHUNKS * INTERVAL - 1.5
    probes = [
        ("/api/v1/health/live", {}),
        ("/api/v1/jobs?limit=1", {"X-API-Key": probe_key}),
    ]
    while time.monotonic() < deadline:
        for path, headers in probes:
            started = time.monotonic()
            try:
                status, _, body = request(LB, "GET", path, headers, source=PROBER)
            except OSError as exc:
                status, body = 0, repr(exc).encode()
            latencies.append(time.monotonic() - started)
            if status != 200:
                failures.append((path, status, body[:200]))
        # About 8 requests a second: well under HAProxy's per-client rate limit.
        time.sleep(0.25)
    for t in uploads:
        t.join(timeout=120)

    worst = p99(latencies)
    print(
        f"other client during {SLOW_UPLOADS} slow uploads: {len(latencies)} requests, "
        f"p99 {worst * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms; "
        f"upload outcomes {sorted(map(str, outcomes))}"
    )
    assert not failures, failures
    assert worst < 1.0, f"p99 {worst:.2f} s"
    # The uploads themselves: each got an answer; those over the per-client limit a 429.
    assert len(outcomes) == SLOW_UPLOADS and all(isinstance(o, int) for o in outcomes), outcomes
    assert 429 in outcomes, outcomes


def _logged(request_id: str) -> dict:
    def line():
        with open(ACCESS_LOG, encoding="utf-8") as fh:
            for raw in fh:
                if request_id in raw:
                    entry = json.loads(raw)
                    if entry.get("request_id") == request_id:
                        return entry
        return None

    return wait_for(f"access-log line {request_id}", line, timeout=10, interval=0.2)


def test_forged_forwarded_for_is_not_believed(stack):
    # Straight to gunicorn from 127.0.0.1: that is not the proxy, so the header is ignored.
    rid = uuid.uuid4().hex
    forged = {"X-Forwarded-For": "203.0.113.77", "X-Request-ID": rid}
    status, _, _ = request(API_DIRECT, "GET", "/api/v1/health/live", forged)
    assert status == 200
    assert _logged(rid)["client_ip"] == "127.0.0.1"

    # Through HAProxy the client's real address is used, whatever it put in the header.
    rid = uuid.uuid4().hex
    forged = {"X-Forwarded-For": "203.0.113.78", "X-Request-ID": rid}
    status, _, _ = request(LB, "GET", "/api/v1/health/live", forged, source=FORGER)
    assert status == 200
    assert _logged(rid)["client_ip"] == FORGER


def test_stats_listen_on_loopback_and_need_the_password(stack):
    listening = subprocess.run(
        ["ss", "-Hltn", "sport", "= :8404"], capture_output=True, text=True, check=True
    ).stdout.split()
    local = [w for w in listening if w.endswith(":8404")]
    assert local and all(w.startswith("127.") for w in local), listening

    status, headers, _ = request(STATS, "GET", "/stats")
    assert status == 401 and "basic" in headers.get("www-authenticate", "").lower()
    wrong = base64.b64encode(b"admin:not-the-password").decode()
    assert request(STATS, "GET", "/stats", {"Authorization": f"Basic {wrong}"})[0] == 401
    with open(STATS_PASSWORD_FILE, encoding="utf-8") as fh:
        password = fh.read().split()[0]
    right = base64.b64encode(f"admin:{password}".encode()).decode()
    status, _, body = request(STATS, "GET", "/stats", {"Authorization": f"Basic {right}"})
    assert status == 200 and b"Statistics Report" in body
    # Prometheus scrapes HAProxy's own metrics here without a password (loopback only).
    status, _, body = request(STATS, "GET", "/metrics")
    assert status == 200 and b"haproxy_process_" in body


@pytest.mark.parametrize(
    "path",
    [
        "/metrics",
        "/api/v1/metrics",
        "/api/v1/metrics/",
        "//metrics",
        "/api/v1//metrics",
        "/api//v1/metrics",
        "/api/v1/%6detrics",
        "/%6Detrics",
        "/api/v1/metrics?x=1",
        "/METRICS",
    ],
)
def test_api_metrics_are_not_served_through_the_public_frontend(stack, path):
    status, _, body = request(LB, "GET", path, source=FORGER)
    # A redirect to the canonical path would itself be refused; anything else must not be 200.
    assert status != 200, body[:300]
    assert b"ffmpeg_api_" not in body
    # The API's own port still serves them (to Prometheus).
    if path == "/metrics":
        status, _, body = request(API_DIRECT, "GET", "/metrics")
        assert status in (200, 401), body[:300]
