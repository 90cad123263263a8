"""Every deployed worker SIGKILLed mid-job (issue 15, findings 4 and 6), on the stack that
site.yml deployed under supervisor with its real settings (JOB_HEARTBEAT_TIMEOUT 60 s):

- nothing the workers forked (work horses, ffmpeg, RQ's scheduler) keeps running outside
  supervisor: no process of the stack is left with parent 1;
- supervisor restarts them, and each requeues the job its dead predecessor held at once, so
  every job runs again within 10 s instead of after the 60 s heartbeat timeout plus a scan;
- every job completes exactly once, with one valid output.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

from helpers import descendants, parent, running
from runbook_helpers import STORAGE, http, make_input, sql, submit_transcodes, wait_for

PROGRAM = "ffmpeg-api-worker"
RESTART_TARGET = 10.0


def worker_pids() -> dict[str, int]:
    out = subprocess.run(
        ["supervisorctl", "status", f"{PROGRAM}:"], capture_output=True, text=True, timeout=30
    ).stdout
    pids = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[1] == "RUNNING" and parts[2] == "pid":
            pids[parts[0]] = int(parts[3].rstrip(","))
    return pids


def all_jobs(ids: list[str], condition: str) -> bool:
    """Whether every job of `ids` meets the SQL condition."""
    rows = sql(
        f"SELECT count(*) FROM jobs WHERE id = ANY(%s::uuid[]) AND {condition}",
        (ids,),
    )
    return rows[0][0] == len(ids)


def stack_orphans() -> list[str]:
    """Running processes of the stack's workers or ffmpeg that PID 1 adopted."""
    orphans = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        if not running(entry) or parent(entry) != 1:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "ffmpeg-api worker" in cmd or cmd.startswith("ffmpeg "):
            orphans.append(f"{entry}: {cmd[:120]}")
    return orphans


def test_sigkill_of_every_worker_leaves_no_orphan_and_jobs_run_again_within_seconds(
    api_key, capsys
):
    before = worker_pids()
    assert before, "no worker runs under supervisor"
    source = make_input("kill-src.mp4", seconds=8, size="854x480", rate=25, key=api_key["api_key"])
    ids = submit_transcodes(api_key["api_key"], source, len(before), 360, "veryslow")

    def all_running():
        return all_jobs(ids, "status = 'processing' AND progress > 0")

    wait_for("every worker running a job", all_running, timeout=120, interval=0.2)
    forked = [p for pid in before.values() for p in descendants(pid)]
    assert len(forked) >= 2 * len(before), forked  # a horse and its ffmpeg per worker at least
    for pid in before.values():
        os.kill(pid, 9)
    killed = time.monotonic()

    def children_gone():
        return not any(running(p) for p in forked)

    wait_for(
        "the killed workers' children to die with them", children_gone, timeout=3, interval=0.05
    )
    assert stack_orphans() == []

    def restarted():
        now = worker_pids()
        return len(now) == len(before) and not set(now.values()) & set(before.values())

    wait_for("supervisor to restart every worker", restarted, timeout=RESTART_TARGET, interval=0.1)

    def running_again():
        return all_jobs(ids, "retry_count = 1 AND status IN ('processing', 'completed')")

    wait_for("every job to run again", running_again, timeout=RESTART_TARGET, interval=0.1)
    again = time.monotonic() - killed

    def healthy():
        status, body = http("GET", "/health")
        return status == 200 and body.get("status") == "healthy"

    wait_for("health to say healthy", healthy, timeout=30, interval=0.2)
    healthy_after = time.monotonic() - killed

    def all_done():
        return all_jobs(ids, "status IN ('completed', 'failed', 'cancelled')")

    wait_for("every job to finish", all_done, timeout=300, interval=0.5)
    done = time.monotonic() - killed
    rows = sql(
        "SELECT id::text, status, retry_count, outputs, error FROM jobs WHERE id = ANY(%s::uuid[])",
        (ids,),
    )
    for job_id, status, retries, outputs, error in rows:
        assert (status, retries) == ("completed", 1), (job_id, status, retries, error)
        assert len(outputs) == 1, outputs  # one output, not one per attempt
        assert os.listdir(os.path.join(STORAGE, "output", job_id)) == [os.path.basename(outputs[0])]
        probe = subprocess.run(
            ["ffprobe", "-v", "error", "-print_format", "json", "-show_format",
             os.path.join(STORAGE, outputs[0])],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert abs(float(json.loads(probe.stdout)["format"]["duration"]) - 8) < 0.5
    assert stack_orphans() == []
    with capsys.disabled():
        print(
            f"\n{len(before)} workers SIGKILLed: every job running again after {again:.2f}s,"
            f" health healthy after {healthy_after:.2f}s,"
            f" the last completed after {done:.2f}s"
        )
