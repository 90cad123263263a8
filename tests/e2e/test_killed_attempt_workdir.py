"""A killed attempt's work directory (tmp/<job>.<attempt>/) is removed once the attempt is
provably dead (its job requeued to a later attempt), and never while an attempt may still run."""

import json
import os
import shutil
import signal
import subprocess
import time

from helpers import finished_job, job_row, slow_job, submit, wait_for

from ffmpeg_api import housekeeping

# The session's settings already shorten JOB_HEARTBEAT_TIMEOUT (3 s) and ORPHAN_SCAN_INTERVAL
# (1 s), so the lost attempt is requeued within seconds.


def test_sigkilled_attempt_leaves_no_work_directory(
    client, user_key, clips, settings, start_worker, capsys
):
    worker = start_worker(settings, name="workdir-victim")
    job_id = submit(client, user_key, slow_job(clips))
    killed_dir = os.path.join(settings.tmp_dir, f"{job_id}.0")

    def writing():
        job = client.get(f"/api/v1/jobs/{job_id}", headers=user_key["headers"]).json
        return job["status"] == "processing" and job["progress"] > 0 and os.listdir(killed_dir)

    wait_for(writing, timeout=60, interval=0.1, what="attempt 0 writing its work directory")
    for pid in [worker.pid, *worker.descendants()]:  # worker, work horse and ffmpeg at once
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    worker.popen.wait(5)
    killed = time.monotonic()
    assert os.path.isdir(killed_dir)
    start_worker(settings, name="workdir-victim")  # the process manager restarts it

    job = finished_job(client, user_key, job_id)
    took = time.monotonic() - killed
    assert job["status"] == "completed", job["error"]
    assert job["retry_count"] == 1
    assert not os.path.exists(killed_dir), os.listdir(killed_dir)
    assert not any(n.startswith(job_id) for n in os.listdir(settings.tmp_dir))
    output = os.path.join(settings.storage_root, job["output_path"])
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_format",
            "-show_streams",
            output,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    info = json.loads(out.stdout)
    assert abs(float(info["format"]["duration"]) - 8) < 0.5
    assert any(s["codec_type"] == "video" for s in info["streams"])
    with capsys.disabled():
        print(f"\nworker SIGKILL mid-job: requeued attempt completed after {took:.2f}s")


def test_only_dead_attempts_directories_are_removed(client, user_key, clips, settings, db_conn):
    """The rule on its own, against real rows: superseded attempts and long-finished jobs go;
    the current attempt of a processing, queued or just-cancelled job stays."""
    ids = [
        submit(
            client,
            user_key,
            {"input": clips["short.mp4"], "operations": [{"type": "thumbnail", "count": 1}]},
        )
        for _ in range(4)
    ]
    running, queued, cancelled, gave_up = ids
    states = {
        running: ("processing", 2, "0 seconds"),
        queued: ("queued", 1, "0 seconds"),
        cancelled: ("cancelled", 0, "0 seconds"),
        gave_up: ("failed", 3, "1 hour"),
    }
    for job_id, (status, attempt, age) in states.items():
        db_conn.execute(
            "UPDATE jobs SET status = %s, retry_count = %s, updated_at = now() - %s::interval"
            " WHERE id = %s",
            (status, attempt, age, job_id),
        )
    db_conn.commit()
    dirs = {
        f"{running}.0": False,
        f"{running}.1": False,
        f"{running}.2": True,  # the live attempt
        f"{queued}.0": False,
        f"{queued}.1": True,  # about to be claimed
        f"{cancelled}.0": True,  # its worker may still be noticing the cancel
        f"{gave_up}.3": False,  # the last lost attempt of a job that gave up
        f"{gave_up}.part": True,  # not an attempt's name
    }
    for name in dirs:
        os.makedirs(os.path.join(settings.tmp_dir, name, "sub"))
        with open(os.path.join(settings.tmp_dir, name, "sub", "x.mp4"), "wb") as fh:
            fh.write(b"x" * 100)
    try:
        removed = housekeeping.remove_dead_attempt_dirs(db_conn, settings)
        assert sorted(removed) == sorted(f"tmp/{n}" for n, kept in dirs.items() if not kept)
        for name, kept in dirs.items():
            assert os.path.isdir(os.path.join(settings.tmp_dir, name)) is kept, name
        assert housekeeping.remove_dead_attempt_dirs(db_conn, settings) == []  # a second pass
        assert job_row(settings, running)["status"] == "processing"
    finally:
        for name in dirs:
            shutil.rmtree(os.path.join(settings.tmp_dir, name), ignore_errors=True)
