"""Helpers shared by the test layers (importable as `helpers`; conftest files are not
modules to import from: pytest has one per directory)."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from ffmpeg_api import db as dbmod
from ffmpeg_api.settings import Settings


def env_for(settings: Settings) -> dict:
    from dataclasses import fields

    env = dict(os.environ)
    for f in fields(settings):
        value = getattr(settings, f.name)
        if isinstance(value, tuple):
            value = ",".join(value)
        elif isinstance(value, bool):
            value = "true" if value else "false"
        env[f.metadata["env"]] = str(value)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def proc_stat(pid: int | str) -> tuple[str, int] | None:
    """(state, parent pid) of a process, read from /proc (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return fields[0], int(fields[1])
    except OSError:
        return None


def parent(pid: int | str) -> int | None:
    """The parent pid of a process (None once it is gone)."""
    stat = proc_stat(pid)
    return stat[1] if stat else None


def running(pid: int | str) -> bool:
    """Whether a process runs (a zombie waiting to be reaped does not)."""
    stat = proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def children(pid: int) -> list[int]:
    """The direct children of a process."""
    return [int(e) for e in os.listdir("/proc") if e.isdigit() and parent(e) == pid]


def descendants(pid: int) -> list[int]:
    """Children, grandchildren, ... of a process."""
    found, frontier = [], [pid]
    while frontier:
        kids = children(frontier.pop())
        found.extend(kids)
        frontier.extend(kids)
    return found


class Proc:
    def __init__(self, popen: subprocess.Popen, log_path: str):
        self.popen = popen
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        with open(self.log_path, errors="replace") as fh:
            return fh.read()

    def descendants(self) -> list[int]:
        return descendants(self.pid)

    def stop(self, sig=signal.SIGTERM, timeout=15) -> None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)


def wait_for(predicate, *, timeout: float, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def submit(client, key, body) -> str:
    """POST /convert through a Flask test client with a key fixture; the accepted job's id."""
    r = client.post("/api/v1/convert", headers=key["headers"], json=body)
    assert r.status_code == 202, r.json
    return r.json["id"]


def slow_job(clips) -> dict:
    """A job body that runs for several seconds on this machine (8 s of the long clip at
    x264's veryslow preset): long enough to be caught, and killed, mid-transcode."""
    return {
        "input": clips["long.mp4"],
        "operations": [
            {"type": "trim", "start": 0, "duration": 8},
            {"type": "transcode", "video_codec": "h264", "preset": "veryslow"},
        ],
    }


def finished_job(client, key, job_id: str, timeout: float = 120) -> dict:
    """GET /jobs/<id> until the job is completed, failed or cancelled; its last answer."""

    def finished():
        job = client.get(f"/api/v1/jobs/{job_id}", headers=key["headers"]).json
        return job if job["status"] in ("completed", "failed", "cancelled") else None

    return wait_for(finished, timeout=timeout, interval=0.2, what=f"job {job_id} to finish")


def job_row(settings, job_id):
    with dbmod.connect(settings.database_url) as conn:
        return conn.execute("SELECT * FROM jobs WHERE id = %s", (job_id,)).fetchone()


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def monitoring_auth(secrets: str = "secrets") -> dict:
    """The Authorization header for Prometheus, Alertmanager and the exporters of a deployed
    inventory (its generated monitoring_web_password in var/<secrets>/)."""
    import base64

    with open(os.path.join(REPO_ROOT, "var", secrets, "monitoring_web_password")) as fh:
        password = fh.read().split()[0]
    token = base64.b64encode(f"monitoring:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def lavfi_clip(
    path, *, size: str = "320x240", seconds: float = 3, rate: int = 25, tone: int | None = 440
) -> str:
    """A generated H.264 MP4 (testsrc2, with a sine tone as AAC unless tone is None) at path."""
    args = ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}:duration={seconds}"]
    if tone is not None:
        args += ["-f", "lavfi", "-i", f"sine=frequency={tone}:duration={seconds}"]
    args += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    if tone is not None:
        args += ["-c:a", "aac", "-shortest"]
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args, str(path)], check=True)
    return str(path)
