"""A worker SIGKILLed mid-job (issue 15, findings 4 and 6): nothing it forked keeps running
outside the process manager (its work horse, ffmpeg, RQ's scheduler die with it), and once the
process manager restarts it under its fixed name, the job it held runs again within seconds,
not after JOB_HEARTBEAT_TIMEOUT, and completes once."""

import json
import os
import signal
import subprocess
import sys
import time

import redis
from helpers import finished_job, job_row, running, slow_job, submit, wait_for

from ffmpeg_api import worker as worker_mod

# Deployed values: the heartbeat reaper alone would take 60 s + a 15 s scan to requeue.
SLOW_REAPER = {"job_heartbeat_timeout": 60.0, "orphan_scan_interval": 15.0}
RESTART_TARGET = 10.0  # seconds from the SIGKILL until the job runs again


def test_sigkilled_worker_leaves_no_orphans_and_its_job_runs_again_within_seconds(
    client, user_key, clips, make_settings, start_worker, capsys
):
    settings = make_settings(**SLOW_REAPER)
    conn_r = redis.Redis.from_url(settings.redis_url)
    for key in conn_r.scan_iter("rq:scheduler-lock:*"):  # so that this worker runs the scheduler
        conn_r.delete(key)
    victim = start_worker(settings, name="sigkill-victim")
    wait_for(victim.descendants, timeout=20, what="the worker's RQ scheduler process")
    job_id = submit(client, user_key, slow_job(clips))

    def transcoding():
        job = client.get(f"/api/v1/jobs/{job_id}", headers=user_key["headers"]).json
        return job["status"] == "processing" and job["progress"] > 0

    wait_for(transcoding, timeout=60, interval=0.1, what="the job running on the victim")
    forked = victim.descendants()  # scheduler, work horse, ffmpeg
    assert len(forked) >= 3, forked
    os.kill(victim.pid, signal.SIGKILL)  # the worker process only, as an OOM kill would
    victim.popen.wait(5)
    killed = time.monotonic()

    wait_for(
        lambda: not any(running(p) for p in forked),
        timeout=3,
        interval=0.05,
        what=f"the killed worker's children {forked} to die with it",
    )
    assert not worker_mod.name_in_use("sigkill-victim")

    start_worker(settings, name="sigkill-victim")  # what supervisor/systemd do within ~1-2 s

    def running_again():
        row = job_row(settings, job_id)
        return row if row["retry_count"] == 1 and row["status"] != "queued" else None

    wait_for(running_again, timeout=RESTART_TARGET, interval=0.1, what="the job to run again")
    restarted = time.monotonic() - killed

    job = finished_job(client, user_key, job_id)
    done = time.monotonic() - killed
    assert job["status"] == "completed", job["error"]
    assert job["retry_count"] == 1
    out_dir = os.path.join(settings.output_dir, job_id)
    assert sorted(os.listdir(out_dir)) == sorted(os.path.basename(o) for o in job["outputs"])
    assert len(job["outputs"]) == 1, job["outputs"]  # one output, not one per attempt
    assert not any(n.startswith(job_id) for n in os.listdir(settings.tmp_dir))
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", job["outputs"][0]],
        capture_output=True,
        text=True,
        check=True,
        cwd=settings.storage_root,
    )
    assert abs(float(json.loads(out.stdout)["format"]["duration"]) - 8) < 0.5
    with capsys.disabled():
        print(
            f"\nworker SIGKILL: children gone at once, job running again after {restarted:.2f}s,"
            f" completed after {done:.2f}s"
        )


def test_a_live_process_under_the_same_name_keeps_its_jobs(
    client, user_key, clips, settings, db_conn
):
    """The fast release is only for a dead predecessor: while any process of this host runs
    under the worker's name, its jobs stay with it (the heartbeat reaper is the judge)."""
    job_id = submit(
        client,
        user_key,
        {"input": clips["short.mp4"], "operations": [{"type": "thumbnail", "count": 1}]},
    )
    db_conn.execute(
        "UPDATE jobs SET status = 'processing', worker_id = 'twin', started_at = now(),"
        " heartbeat_at = now() WHERE id = %s",
        (job_id,),
    )
    db_conn.commit()
    conn_r = redis.Redis.from_url(settings.redis_url)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "worker", "--name", "twin"]
    )
    try:
        wait_for(lambda: worker_mod.name_in_use("twin"), timeout=5, what="the holder to start")
        assert worker_mod.release_predecessor_jobs(conn_r, settings, "twin") is None
        assert job_row(settings, job_id)["status"] == "processing"
    finally:
        holder.kill()
        holder.wait(5)
    found = worker_mod.release_predecessor_jobs(conn_r, settings, "twin")
    assert found == {"changed": True, "requeued": [job_id], "failed": []}
    row = job_row(settings, job_id)
    assert (row["status"], row["retry_count"], row["worker_id"]) == ("queued", 1, None)
    assert worker_mod.release_predecessor_jobs(conn_r, settings, "twin")["changed"] is False
