"""Redis loses its data (FLUSHALL) while real workers run real transcodes: the workers register
again within a maintenance pass, so /health and the ffmpeg_workers metric never report them
gone (the NoWorkers condition, on which EDA restarts workers), and every job still completes:
the running ones under their workers, the queued ones put back by reconcile from PostgreSQL."""

import json
import subprocess
import time

import redis
from helpers import wait_for

WORKERS = 2
JOBS = 4
SCAN_INTERVAL = 2.0  # ORPHAN_SCAN_INTERVAL: the pass in which a worker checks its registration
CLIP = [
    {"type": "trim", "start": 0, "duration": 5},
    {"type": "transcode", "video_codec": "h264", "preset": "veryslow"},
]


def health(client, key) -> dict:
    return client.get("/api/v1/health", headers=key["headers"]).json


def all_alive(client, key) -> dict | None:
    report = health(client, key)
    workers = report["components"]["workers"]
    return report if report["status"] == "healthy" and workers["cpu"]["alive"] == WORKERS else None


def test_workers_register_again_after_redis_loses_its_data(
    client, user_key, clips, make_settings, start_worker, capsys
):
    settings = make_settings(orphan_scan_interval=SCAN_INTERVAL)
    workers = [start_worker(settings, name=f"rereg-{i}") for i in range(WORKERS)]
    wait_for(lambda: all_alive(client, user_key), timeout=10, what="both workers registered")
    ids = []
    for _ in range(JOBS):
        r = client.post(
            "/api/v1/convert",
            headers=user_key["headers"],
            json={"input": clips["long.mp4"], "operations": CLIP},
        )
        assert r.status_code == 202, r.json
        ids.append(r.json["id"])

    def both_busy():
        jobs = [client.get(f"/api/v1/jobs/{i}", headers=user_key["headers"]).json for i in ids]
        return sum(j["status"] == "processing" and j["progress"] > 0 for j in jobs) == WORKERS

    wait_for(both_busy, timeout=60, interval=0.2, what="both workers transcoding")

    redis.Redis.from_url(settings.redis_url).flushall()
    flushed = time.monotonic()
    report = wait_for(
        lambda: all_alive(client, user_key),
        timeout=60,
        interval=0.1,
        what="the workers to register again",
    )
    healthy_after = time.monotonic() - flushed
    assert healthy_after <= 2 * SCAN_INTERVAL, f"healthy only {healthy_after:.2f}s after FLUSHALL"
    assert report["components"]["workers"]["cpu"]["busy"] >= 1  # registered as they are

    def finished():
        jobs = [client.get(f"/api/v1/jobs/{i}", headers=user_key["headers"]).json for i in ids]
        done = [j for j in jobs if j["status"] in ("completed", "failed", "cancelled")]
        return jobs if len(done) == len(jobs) else None

    jobs = wait_for(finished, timeout=180, interval=0.5, what="every job to finish")
    last_done = time.monotonic() - flushed
    for job in jobs:
        assert job["status"] == "completed", job["error"]
        out = subprocess.run(
            [
                "ffprobe",
                "-v",
                "error",
                "-print_format",
                "json",
                "-show_format",
                job["output_path"],
            ],
            cwd=settings.storage_root,
            capture_output=True,
            text=True,
            check=True,
        )
        assert abs(float(json.loads(out.stdout)["format"]["duration"]) - 5) < 0.5
    assert all(w.popen.poll() is None for w in workers)
    assert all_alive(client, user_key), health(client, user_key)
    assert all("registered again" in w.log() for w in workers)
    with capsys.disabled():
        print(
            f"\nredis FLUSHALL under load: healthy again after {healthy_after:.2f}s,"
            f" last of {JOBS} jobs completed after {last_done:.2f}s"
        )
