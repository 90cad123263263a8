"""playbooks/site.yml against the multi-host test fleet (inventories/fleet): systemd hosts.

The fleet is podman containers running systemd (tests/fleet/fleet.sh), one per host: lb1,
api1, worker1, data1 (PostgreSQL + Redis) and mon1; api2 and worker2 join in the scale-out
step. Media lives in the bucket of the s3 host's S3 API (STORAGE_BACKEND=s3): no container
shares a volume with another, outputs are downloaded through presigned URLs without the API
key. This module runs the same steps as the molecule/fleet scenario, directly:

1. build the image if its package list changed, start the base fleet;
2. deploy (site.yml ends with a smoke test through HAProxy), then deploy again: no change;
3. scale out with one command (api2 + worker2, limited to them, the load balancer and
   monitoring) and check both API hosts are UP in HAProxy and scraped by Prometheus, jobs run
   on both workers (their outputs, and an HLS ladder, read from the bucket), and nothing
   restarted on the hosts already there;
4. a rolling restart of the API hosts under a bounded request loop: no request fails.

Timings are printed at the end of the session. The containers are removed at the end; the
image stays (tests/fleet/fleet.sh down && podman rmi ... to remove it).
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shutil
import subprocess
import threading
import time
from urllib.parse import urlsplit

import pytest
import requests
from helpers import monitoring_auth

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FLEET_SH = os.path.join(REPO, "tests", "fleet", "fleet.sh")
INVENTORY_BASE = "inventories/fleet/hosts.yml"
INVENTORY_ALL = "inventories/fleet"
SCALE_LIMIT = "api2,worker2,loadbalancer,monitoring"

LB = "10.89.77.10"
MON = "10.89.77.50"
S3 = "10.89.77.60:9000"  # the fleet's S3 API (tests/fleet/fleet.sh), where media lives
API_URL = f"http://{LB}:8080/api/v1"
RECAP = re.compile(
    r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M
)

# Filled as the steps run; tests/fleet/conftest.py prints them in the terminal summary.
TIMINGS: dict[str, float] = {}
FIGURES: dict[str, str] = {}


def _podman_usable() -> str | None:
    """None when podman can run containers here, else why not."""
    if os.geteuid() != 0:
        return "the fleet runs rootful podman containers: needs root"
    if not shutil.which("podman"):
        return "podman is not installed (tests/run fleet installs it)"
    if not shutil.which("debootstrap"):
        return "debootstrap is not installed (tests/run fleet installs it)"
    proc = subprocess.run(["podman", "info"], capture_output=True, text=True)
    if proc.returncode != 0:
        return f"podman cannot run containers here: {proc.stderr.strip()[-300:]}"
    return None


_SKIP_REASON = _podman_usable()
pytestmark = pytest.mark.skipif(_SKIP_REASON is not None, reason=_SKIP_REASON or "")


def fleet(*args: str, timeout: int = 1800) -> str:
    proc = subprocess.run(
        [FLEET_SH, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc.stdout


def in_container(host: str, *argv: str) -> str:
    proc = subprocess.run(
        ["podman", "exec", f"fleet-{host}", *argv], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, f"{host}: {argv}: {proc.stderr}"
    return proc.stdout


def playbook(
    inventory: str, *args: str, name: str = "site.yml", timeout: int = 1500
) -> tuple[str, dict, float]:
    started = time.monotonic()
    env = {
        **os.environ,
        "PATH": os.path.join(REPO, ".venv", "bin") + os.pathsep + os.environ.get("PATH", ""),
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_NOCOLOR": "1",
    }
    proc = subprocess.run(
        [
            os.path.join(REPO, ".venv", "bin", "ansible-playbook"),
            "-i",
            inventory,
            f"playbooks/{name}",
            *args,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    elapsed = time.monotonic() - started
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-8000:]
    recap = {
        m.group(1): {
            "changed": int(m.group(3)),
            "unreachable": int(m.group(4)),
            "failed": int(m.group(5)),
        }
        for m in RECAP.finditer(out)
    }
    assert recap, out[-3000:]
    assert all(h["failed"] == 0 and h["unreachable"] == 0 for h in recap.values()), recap
    return out, recap, elapsed


def changed_tasks(out: str) -> list[str]:
    """The tasks that reported a change, with the host (for a readable failure)."""
    names, current = [], None
    for line in out.splitlines():
        if line.startswith(("TASK [", "RUNNING HANDLER [")):
            current = line.rstrip("* ")
        elif line.startswith("changed:") and current:
            names.append(f"{current} {line.split(' => ')[0]}")
    return names


def main_pids() -> dict[str, str]:
    """Main PIDs of the long-running services of the hosts that exist before the scale-out."""
    units = {
        "api1": ["ffmpeg-api.service", "prometheus-node-exporter.service"],
        "worker1": ["ffmpeg-api-worker@1.service", "prometheus-node-exporter.service"],
        "data1": [
            "postgresql@15-main.service",
            "redis-server.service",
            "prometheus-redis-exporter.service",
            "prometheus-postgres-exporter.service",
        ],
        "mon1": ["prometheus.service", "prometheus-alertmanager.service"],
    }
    pids = {}
    for host, names in units.items():
        for unit in names:
            pid = in_container(host, "systemctl", "show", "-p", "MainPID", "--value", unit).strip()
            assert pid not in ("", "0"), f"{unit} is not running on {host}"
            pids[f"{host}:{unit}"] = pid
    return pids


def wait_for(what: str, check, timeout: float = 90, interval: float = 2):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except requests.RequestException as exc:
            last = exc
        time.sleep(interval)
    pytest.fail(f"timed out waiting for {what}: last result {last!r}")


@pytest.fixture(scope="module")
def base_fleet():
    started = time.monotonic()
    fleet("image")
    TIMINGS["image build (0 when cached)"] = time.monotonic() - started
    fleet("down")
    started = time.monotonic()
    fleet("up")
    TIMINGS["containers up"] = time.monotonic() - started
    yield
    if not os.environ.get("FLEET_KEEP"):
        fleet("down")


@pytest.fixture(scope="module")
def deployed(base_fleet):
    out, _recap, elapsed = playbook(INVENTORY_BASE)
    TIMINGS["first fleet deploy"] = elapsed
    return out


@pytest.fixture(scope="module")
def api_key(deployed):
    out = in_container(
        "api1",
        "/usr/local/bin/ffmpeg-api-admin",
        "keys",
        "create",
        "--name",
        "fleet-test",
        "--user",
        "fleet",
        "--json",
    )
    return json.loads(out)["api_key"]


def test_first_deploy_ends_with_a_smoke_test(deployed):
    assert "completed, output h264,240" in deployed


def test_systemd_units_run_the_service(deployed):
    assert in_container("api1", "systemctl", "is-active", "ffmpeg-api.service").strip() == "active"
    assert (
        in_container("worker1", "systemctl", "is-active", "ffmpeg-api-worker@1.service").strip()
        == "active"
    )
    assert in_container("worker1", "systemctl", "is-enabled", "ffmpeg-api-workers.target").strip()


def test_second_run_changes_nothing(deployed):
    out, recap, elapsed = playbook(INVENTORY_BASE)
    TIMINGS["second run (changed=0)"] = elapsed
    assert all(h["changed"] == 0 for h in recap.values()), changed_tasks(out)


def test_health_reports_the_bucket(api_key):
    """Through HAProxy, with a key: the storage component is the fleet's bucket, reachable,
    and the api host's scratch directory (WORK_DIR) exists."""
    body = requests.get(f"{API_URL}/health", headers={"X-API-Key": api_key}, timeout=10).json()
    storage = body["components"]["storage"]
    assert storage["backend"] == "s3", storage
    assert storage["status"] == "ok", storage
    assert "scratch_error" not in storage and storage["scratch_free_bytes"] > 0, storage
    for host in ("api1", "worker1"):
        owner = in_container(host, "stat", "-c", "%U %a", "/var/lib/ffmpeg-api/work").split()
        assert owner == ["ffmpeg-api", "750"], (host, owner)


@pytest.fixture(scope="module")
def scaled_out(deployed):
    before = main_pids()
    started = time.monotonic()
    fleet("up", "api2", "worker2")
    TIMINGS["scale-out containers up"] = time.monotonic() - started
    # The runbook's horizontal-scaling playbook: site.yml for the new hosts, then it waits until
    # HAProxy has api2 UP, Prometheus scrapes it and worker2's workers are registered.
    out, recap, elapsed = playbook(
        INVENTORY_ALL,
        "-e",
        "horizontal_scaling_new_hosts=api2,worker2",
        "--limit",
        SCALE_LIMIT,
        name="horizontal_scaling.yml",
    )
    verified = re.search(
        r"TASK \[Wait until each new worker host has workers registered\][^\n]*\n"
        r"(?:FAILED - RETRYING[^\n]*\n)*ok: \[api2\]",
        out,
    )
    assert verified, out[-3000:]
    TIMINGS["scale-out run (horizontal_scaling.yml)"] = elapsed
    return {"before": before, "after": main_pids(), "out": out, "recap": recap}


def test_scale_out_touches_only_the_new_hosts_lb_and_monitoring(scaled_out):
    assert set(scaled_out["recap"]) == {"api2", "worker2", "lb1", "mon1"}


def test_scale_out_restarts_nothing_that_was_running(scaled_out):
    assert scaled_out["after"] == scaled_out["before"]


def _haproxy_states() -> dict[str, int]:
    text = requests.get(f"http://{LB}:8404/metrics", timeout=5).text
    states = {}
    for m in re.finditer(
        r'^haproxy_server_status\{proxy="ffmpeg_api",server="([^"]+)",state="UP"\} (\d+)',
        text,
        re.M,
    ):
        states[m.group(1)] = int(m.group(2))
    return states


def test_both_api_hosts_are_up_in_haproxy(scaled_out):
    states = wait_for(
        "api1 and api2 UP in HAProxy",
        lambda: (s := _haproxy_states()).get("api1") == 1 and s.get("api2") == 1 and s,
    )
    assert states == {"api1": 1, "api2": 1}


def _prometheus_api_targets() -> dict[str, str]:
    body = requests.get(
        f"http://{MON}:9090/api/v1/targets?state=active",
        headers=monitoring_auth("secrets-fleet"),
        timeout=5,
    ).json()
    return {
        t["labels"]["instance"]: t["health"]
        for t in body["data"]["activeTargets"]
        if t["labels"]["job"] == "ffmpeg_api"
    }


def test_prometheus_scrapes_both_api_hosts(scaled_out):
    targets = wait_for(
        "Prometheus scraping api1 and api2",
        lambda: (t := _prometheus_api_targets()) == {"api1": "up", "api2": "up"} and t,
        timeout=120,
        interval=3,
    )
    assert targets == {"api1": "up", "api2": "up"}


def test_jobs_run_on_both_workers(scaled_out, api_key, tmp_path):
    headers = {"X-API-Key": api_key}
    clip = tmp_path / "in.mp4"
    subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=25:duration=4",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
            str(clip),
        ],
        check=True,
        timeout=60,
    )
    with clip.open("rb") as fh:
        up = requests.post(
            f"{API_URL}/files?name=fleet.mp4",
            data=fh,
            headers={**headers, "Content-Type": "application/octet-stream"},
            timeout=60,
        )
    assert up.status_code == 201, up.text
    path = up.json()["path"]
    ids = []
    for _ in range(8):
        r = requests.post(
            f"{API_URL}/convert",
            json={
                "input": path,
                "output": "mp4",
                "operations": [{"type": "transcode", "height": 240, "preset": "ultrafast"}],
            },
            headers=headers,
            timeout=30,
        )
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])

    def all_done():
        jobs = [
            requests.get(f"{API_URL}/jobs/{i}", headers=headers, timeout=10).json() for i in ids
        ]
        return (
            jobs if all(j["status"] in ("completed", "failed", "cancelled") for j in jobs) else None
        )

    jobs = wait_for("8 jobs to finish", all_done, timeout=240, interval=2)
    assert [j["status"] for j in jobs] == ["completed"] * 8, [
        (j["status"], j.get("error")) for j in jobs
    ]
    hosts = {j["worker_id"].split(".")[0] for j in jobs}
    per_worker = {h: sum(j["worker_id"].startswith(h + ".") for j in jobs) for h in sorted(hosts)}
    FIGURES["jobs per worker host"] = ", ".join(f"{h}: {n}" for h, n in per_worker.items())
    assert hosts == {"worker1", "worker2"}, [j["worker_id"] for j in jobs]
    # Each worker host wrote its outputs to the bucket; the API hands out a presigned URL.
    for host in sorted(hosts):
        job = next(j for j in jobs if j["worker_id"].startswith(host + "."))
        body = download_output(job["id"], headers)
        out = tmp_path / f"{host}.mp4"
        out.write_bytes(body)
        probe = subprocess.run(
            ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
             "stream=codec_name,height", "-of", "csv=p=0", str(out)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert probe.stdout.strip() == "h264,240", (host, probe.stdout)


def download_output(job_id: str, headers: dict, name: str | None = None) -> bytes:
    """A job's output through the API's 302 to a presigned URL of the fleet's S3 API, fetched
    without the API key (the signature is the authorization)."""
    params = {"file": name} if name else {}
    r = requests.get(
        f"{API_URL}/jobs/{job_id}/output",
        params=params,
        headers=headers,
        allow_redirects=False,
        timeout=30,
    )
    assert r.status_code == 302, (r.status_code, r.text[:300])
    location = urlsplit(r.headers["Location"])
    assert location.netloc == S3, r.headers["Location"]
    got = requests.get(r.headers["Location"], timeout=60)
    assert got.status_code == 200, (got.status_code, got.text[:300])
    download_output.content_types[name or ""] = got.headers.get("Content-Type", "")
    return got.content


download_output.content_types = {}


def test_no_container_shares_a_volume(scaled_out):
    """Media is in the bucket only: api and worker hosts mount nothing, and no fleet container
    has a volume or a host directory that another one also has."""
    names = subprocess.run(
        ["podman", "ps", "-a", "--filter", "label=ffmpeg-api-fleet=1", "--format", "{{.Names}}"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert {f"fleet-{h}" for h in ("api1", "api2", "worker1", "worker2", "s3")} <= set(names)
    users: dict[str, list[str]] = {}
    for name in names:
        mounts = json.loads(
            subprocess.run(
                ["podman", "inspect", "--format", "{{json .Mounts}}", name],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        for m in mounts or []:
            if m.get("Type") in ("volume", "bind"):
                users.setdefault(m.get("Name") or m["Source"], []).append(name)
        if name.startswith(("fleet-api", "fleet-worker")):
            assert [m for m in mounts or [] if m.get("Type") in ("volume", "bind")] == [], (
                name,
                mounts,
            )
    shared = {source: who for source, who in users.items() if len(who) > 1}
    assert shared == {}, shared
    FIGURES["volumes shared between containers"] = f"0 ({len(names)} containers inspected)"


def test_hls_ladder_is_read_from_the_bucket(scaled_out, api_key, tmp_path):
    """An HLS ladder converted on a worker host: its playlists and one segment of every
    variant come from the bucket through their URLs, each with its HLS content type."""
    headers = {"X-API-Key": api_key}
    clip = tmp_path / "hls.mp4"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
         "testsrc2=size=640x360:rate=25:duration=6", "-f", "lavfi", "-i",
         "sine=frequency=440:duration=6", "-shortest", "-c:v", "libx264", "-preset", "ultrafast",
         "-pix_fmt", "yuv420p", "-c:a", "aac", str(clip)],
        check=True, timeout=60,
    )  # fmt: skip
    with clip.open("rb") as fh:
        up = requests.post(
            f"{API_URL}/files?name=hls.mp4",
            data=fh,
            headers={**headers, "Content-Type": "application/octet-stream"},
            timeout=60,
        )
    assert up.status_code == 201, up.text
    r = requests.post(
        f"{API_URL}/convert",
        json={
            "input": up.json()["path"],
            "output": "m3u8",
            "operations": [
                {
                    "type": "hls",
                    "segment_duration": 2,
                    "ladder": [
                        {"height": 240, "video_bitrate": "300k"},
                        {"height": 144, "video_bitrate": "150k", "audio_bitrate": "48k"},
                    ],
                }
            ],
        },
        headers=headers,
        timeout=30,
    )
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]

    def done():
        job = requests.get(f"{API_URL}/jobs/{job_id}", headers=headers, timeout=10).json()
        return job if job["status"] in ("completed", "failed", "cancelled") else None

    job = wait_for("the HLS job", done, timeout=240, interval=2)
    assert job["status"] == "completed", job.get("error")
    master = download_output(job_id, headers, "master.m3u8").decode()
    variants = [line for line in master.splitlines() if line and not line.startswith("#")]
    assert len(variants) == 2, master
    for variant in variants:
        playlist = download_output(job_id, headers, variant).decode()
        segments = [line for line in playlist.splitlines() if line and not line.startswith("#")]
        assert segments, playlist
        segment = posixpath.join(posixpath.dirname(variant), segments[0])
        assert len(download_output(job_id, headers, segment)) > 1000
        assert download_output.content_types[segment] in ("video/mp2t", "video/mp4"), segment
    for playlist in ("master.m3u8", *variants):
        assert download_output.content_types[playlist] == "application/vnd.apple.mpegurl"
    FIGURES["HLS from the bucket"] = (
        f"{len(variants)} variants, playlists and segments via presigned URLs"
    )


class RequestLoop(threading.Thread):
    """GET /health/live and an authenticated GET /jobs through the LB, alternately, until
    stopped or bounded (max_seconds, max_requests). Paced under HAProxy's per-IP limit."""

    def __init__(self, api_key: str, max_seconds: float = 180, max_requests: int = 5000):
        super().__init__(daemon=True)
        self.api_key = api_key
        self.max_seconds = max_seconds
        self.max_requests = max_requests
        self.stop = threading.Event()
        self.ok = 0
        self.failures: list[str] = []

    def run(self):
        session = requests.Session()
        started = time.monotonic()
        n = 0
        while not self.stop.is_set() and n < self.max_requests:
            if time.monotonic() - started > self.max_seconds:
                break
            if n % 2:
                url, headers = f"{API_URL}/jobs?limit=1", {"X-API-Key": self.api_key}
            else:
                url, headers = f"{API_URL}/health/live", {}
            n += 1
            try:
                r = session.get(url, headers=headers, timeout=10)
                if r.status_code == 200:
                    self.ok += 1
                else:
                    self.failures.append(f"{url}: {r.status_code} {r.text[:200]}")
            except requests.RequestException as exc:
                self.failures.append(f"{url}: {exc}")
            time.sleep(0.1)


def _api_masters() -> dict[str, tuple[str, int]]:
    """api host -> (gunicorn master PID, its worker processes)."""
    found = {}
    for h in ("api1", "api2"):
        pid = in_container(
            h, "systemctl", "show", "-p", "MainPID", "--value", "ffmpeg-api.service"
        ).strip()
        workers = in_container(h, "sh", "-c", f"pgrep -P {pid} | wc -l").strip()
        found[h] = (pid, int(workers))
    return found


def test_scaling_the_api_signals_gunicorn_and_restarts_nothing(scaled_out, api_key):
    """high_api_latency.yml with another worker count: the api role hands it to the running
    gunicorn under systemd (TTIN, then TTOU back): same master PIDs, no request refused."""
    before = _api_masters()
    deployed = {n for _pid, n in before.values()}
    assert len(deployed) == 1, before
    [deployed_n] = deployed
    loop = RequestLoop(api_key)
    loop.start()
    try:
        for workers in (deployed_n + 2, deployed_n):
            _out, _recap, elapsed = playbook(
                INVENTORY_ALL,
                "-e",
                f"high_api_latency_api_workers={workers}",
                name="high_api_latency.yml",
            )
            now = _api_masters()
            assert {h: pid for h, (pid, _n) in now.items()} == {
                h: pid for h, (pid, _n) in before.items()
            }, "the API restarted"
            assert {n for _pid, n in now.values()} == {workers}, now
            TIMINGS[f"high_api_latency.yml to {workers} api workers"] = elapsed
    finally:
        loop.stop.set()
        loop.join(30)
    FIGURES["requests while scaling the API"] = f"{loop.ok} ok, {len(loop.failures)} failed"
    assert loop.ok > 20
    assert loop.failures == [], loop.failures[:20]


def test_rolling_restart_of_the_api_drops_no_request(scaled_out, api_key):
    before = {
        h: in_container(h, "systemctl", "show", "-p", "MainPID", "--value", "ffmpeg-api.service")
        for h in ("api1", "api2")
    }
    loop = RequestLoop(api_key)
    loop.start()
    time.sleep(3)
    try:
        _out, _recap, elapsed = playbook(
            INVENTORY_ALL,
            "--limit",
            "api",
            "-e",
            json.dumps({"app_environment": {"FLEET_ROLL": str(time.time())}}),
        )
    finally:
        time.sleep(3)
        loop.stop.set()
        loop.join(30)
    TIMINGS["rolling api restart"] = elapsed
    after = {
        h: in_container(h, "systemctl", "show", "-p", "MainPID", "--value", "ffmpeg-api.service")
        for h in ("api1", "api2")
    }
    FIGURES["requests during rolling restart"] = f"{loop.ok} ok, {len(loop.failures)} failed"
    assert all(before[h] != after[h] for h in before), "the API was not restarted"
    assert loop.ok > 100
    assert loop.failures == [], loop.failures[:20]
