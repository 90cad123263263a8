#!/usr/bin/env python3
"""Service benchmark: prints figures, asserts nothing (targets are for people to compare).

  1. overhead ratio: end-to-end job time / the same ffmpeg command run directly
     (10 s 720p clip -> 480p h264; target <= 1.10)
  2. submit -> started latency p50 / p95 (target p50 <= 50 ms)
  3. authenticated GET /jobs/{id} under wrk (32 connections) beside a bare Flask route under the
     same gunicorn settings (target ratio >= 0.5, p99 <= 50 ms)

Starts its own PostgreSQL, Redis, gunicorn and one RQ worker on loopback, and stops them.
Usage: .venv/bin/python bench/bench_service.py [--runs 3] [--latency-jobs 30] [--wrk-seconds 10]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace

import psycopg
import requests

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests"))

import helpers  # noqa: E402

from ffmpeg_api import db as dbmod  # noqa: E402
from ffmpeg_api import keys as keymod  # noqa: E402
from ffmpeg_api.media import plan as media_plan  # noqa: E402
from ffmpeg_api.media import probe as media_probe  # noqa: E402
from ffmpeg_api.media import spec as media_spec  # noqa: E402
from ffmpeg_api.settings import Settings  # noqa: E402

from servers import PostgresServer, RedisServer, free_port  # noqa: E402

#: ffmpeg arguments of the 10 s 720p clip every overhead figure is measured on.
CLIP_720P = [
    "-f",
    "lavfi",
    "-i",
    "testsrc2=size=1280x720:rate=30:duration=10",
    "-f",
    "lavfi",
    "-i",
    "sine=frequency=440:duration=10",
    "-c:v",
    "libx264",
    "-preset",
    "veryfast",
    "-pix_fmt",
    "yuv420p",
    "-c:a",
    "aac",
]

TRANSCODE = {
    "type": "transcode",
    "video_codec": "h264",
    "preset": "veryfast",
    "crf": 23,
    "height": 480,
    "audio_codec": "aac",
}


def env_for(settings: Settings, **extra) -> dict:
    return {**helpers.env_for(settings), **extra}


def percentile(values, q):
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


class Stack:
    def __init__(self):
        self.base = tempfile.mkdtemp(prefix="ffmpeg-api-bench-")
        os.chmod(self.base, 0o755)
        self.pg = PostgresServer(os.path.join(self.base, "pg"))
        os.makedirs(self.pg.base)
        self.redis = RedisServer(os.path.join(self.base, "redis"))
        self.procs: list[subprocess.Popen] = []

    def start(self, **overrides) -> Settings:
        """PostgreSQL, Redis, the storage root and the migrated database; `overrides` replace
        settings (e.g. the s3 backend's)."""
        self.pg.start()
        self.redis.start()
        with psycopg.connect(self.pg.url(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE ffmpeg_api")
        root = os.path.join(self.base, "storage")
        for sub in ("uploads", "output", "tmp"):
            os.makedirs(os.path.join(root, sub))
        self.settings = Settings(
            database_url=self.pg.url("ffmpeg_api"),
            redis_url=self.redis.url(),
            storage_root=root,
            access_log=os.path.join(self.base, "access.log"),
            rate_limit_per_minute=0,
        )
        self.settings = replace(self.settings, **overrides)
        os.makedirs(self.settings.scratch_dir, exist_ok=True)
        dbmod.upgrade(self.settings.database_url)
        return self.settings

    def spawn(self, args, **extra_env) -> subprocess.Popen:
        log = open(os.path.join(self.base, f"proc-{len(self.procs)}.log"), "w")
        p = subprocess.Popen(
            args,
            # This checkout's app (not whichever one the venv has installed) and bench/ (for
            # bare_app), absolute: the processes run from the repository's root.
            env=env_for(
                self.settings,
                PYTHONPATH=os.pathsep.join([os.path.join(REPO, "app"), HERE]),
                **extra_env,
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=REPO,
        )
        self.procs.append(p)
        return p

    def gunicorn(self, app: str, workers: int) -> str:
        port = free_port()
        self.spawn(
            [sys.executable, "-m", "gunicorn", "-c", "python:ffmpeg_api.gunicorn_conf", app],
            GUNICORN_BIND=f"127.0.0.1:{port}",
            GUNICORN_WORKERS=str(workers),
            PROMETHEUS_MULTIPROC_DIR=tempfile.mkdtemp(dir=self.base),
        )
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                requests.get(url + "/api/v1/health/live", timeout=1)
                return url
            except (requests.ConnectionError, requests.Timeout):  # not listening, or booting
                time.sleep(0.1)
        raise RuntimeError(f"gunicorn for {app} did not start")

    def worker(self) -> None:
        """One RQ worker (cpu queue), given time to connect."""
        self.spawn([sys.executable, "-m", "ffmpeg_api.cli", "worker", "--kind", "cpu"])
        time.sleep(2)

    def api_key(self, user_id: str = "bench") -> dict:
        """Headers of a new key of `user_id`, without a rate limit."""
        with dbmod.connect(self.settings.database_url) as conn:
            _key, raw = keymod.create(conn, name=user_id, user_id=user_id, rate_limit=0)
            conn.commit()
        return {"X-API-Key": raw}

    def stop(self):
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        dbmod.close_pools()
        self.redis.stop()
        self.pg.stop()
        shutil.rmtree(self.base, ignore_errors=True)


def generate(path: str, args: list[str]) -> str:
    """Run ffmpeg with `args` writing `path`; the path."""
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args, path], check=True)
    return path


def make_clip(settings, name: str, args: list[str], *, owner: str) -> str:
    """A clip under uploads/<owner>/ (an upload's path has a directory, as the API's
    uploads/<uuid>/<name>), recorded as `owner`'s upload (a path is usable only by its owner
    or an admin key)."""
    from ffmpeg_api import ownership

    folder = os.path.join(settings.storage_root, "uploads", owner)
    os.makedirs(folder, exist_ok=True)
    path = generate(os.path.join(folder, name), args)
    relpath = os.path.relpath(path, settings.storage_root)
    with open(path, "rb") as fh:
        digest = hashlib.sha256(fh.read()).hexdigest()
    with dbmod.connect(settings.database_url) as conn:
        ownership.record_upload(
            conn,
            path=relpath,
            user_id=owner,
            api_key_id=None,
            size=os.path.getsize(path),
            sha256=digest,
        )
        conn.commit()
    return relpath


def wait_job(url, headers, job_id, poll=0.02, timeout=600):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = requests.get(f"{url}/api/v1/jobs/{job_id}", headers=headers).json()
        if job["status"] in ("completed", "failed", "cancelled"):
            return job
        time.sleep(poll)
    raise RuntimeError(f"job {job_id} did not finish")


def bench_ratio(stack, url, headers, clip, runs, *, local_path=None, target=1.10):
    """End-to-end time of a /convert of `clip` (the API's path) / the same ffmpeg command run
    directly on `local_path` (default: the clip under the storage root)."""
    s = stack.settings
    path = local_path or os.path.join(s.storage_root, clip)
    info = media_probe.probe(path)
    ops = media_spec.parse_request("mp4", [TRANSCODE], max_output_pixels=s.max_output_pixels)
    direct, e2e, post, queued, worker = [], [], [], [], []
    for _ in range(runs):
        work = tempfile.mkdtemp(dir=s.scratch_dir)
        steps = media_plan.build_plan(
            input_path=path,
            info=info,
            operations=ops,
            output_format="mp4",
            work_dir=work,
            encoder="cpu",
        )
        t0 = time.perf_counter()
        subprocess.run(
            steps[0].argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        direct.append(time.perf_counter() - t0)
        shutil.rmtree(work)
        # The end is the job's completed_at on the server, so the client can poll gently and
        # not steal CPU from the ffmpeg it is measuring.
        t0 = time.time()
        r = requests.post(
            f"{url}/api/v1/convert",
            headers=headers,
            json={"input": clip, "output": "mp4", "operations": [TRANSCODE]},
        )
        r.raise_for_status()
        post.append(time.time() - t0)
        job = wait_job(url, headers, r.json()["id"], poll=0.25)
        assert job["status"] == "completed", job
        with psycopg.connect(s.database_url) as conn:
            q, w, done = conn.execute(
                "SELECT extract(epoch FROM started_at - created_at),"
                " extract(epoch FROM completed_at - started_at), extract(epoch FROM completed_at)"
                " FROM jobs WHERE id = %s",
                (job["id"],),
            ).fetchone()
        e2e.append(float(done) - t0)
        queued.append(float(q))
        worker.append(float(w))
    d, e = statistics.median(direct), statistics.median(e2e)
    print(
        f"overhead ({s.storage_backend} backend): direct ffmpeg median {d:.3f}s, "
        f"end-to-end median {e:.3f}s, ratio {e / d:.3f} (target <= {target:.2f}; runs={runs})"
    )
    print(
        f"  breakdown (medians): POST /convert {statistics.median(post) * 1000:.0f} ms, "
        f"queued {statistics.median(queued) * 1000:.0f} ms, "
        f"worker {statistics.median(worker):.3f}s (ffmpeg alone {d:.3f}s)"
    )
    return e / d


def bench_latency(stack, url, headers, clip, n):
    ids = []
    for _ in range(n):
        r = requests.post(
            f"{url}/api/v1/convert",
            headers=headers,
            json={"input": clip, "operations": [{"type": "thumbnail", "count": 1}]},
        )
        r.raise_for_status()
        ids.append(r.json()["id"])
        wait_job(url, headers, ids[-1], poll=0.01)
    with psycopg.connect(stack.settings.database_url) as conn:
        rows = conn.execute(
            "SELECT extract(epoch FROM started_at - created_at) * 1000 FROM jobs"
            " WHERE id = ANY(%s::uuid[]) AND retry_count = 0",
            (ids,),
        ).fetchall()
    lat = [float(r[0]) for r in rows]
    print(
        f"submit->started: p50 {percentile(lat, 0.5):.1f} ms, p95 {percentile(lat, 0.95):.1f}"
        f" ms, max {max(lat):.1f} ms over {len(lat)} jobs (target p50 <= 50 ms)"
    )


WRK_RE_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
WRK_RE_P99 = re.compile(r"99%\s+([\d.]+)(us|ms|s)\b")


def run_wrk(url, seconds, headers=None):
    args = ["wrk", "-t2", "-c32", f"-d{seconds}s", "--latency"]
    for k, v in (headers or {}).items():
        args += ["-H", f"{k}: {v}"]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    rps = float(WRK_RE_RPS.search(out).group(1))
    value, unit = WRK_RE_P99.search(out).groups()
    p99 = float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rps, p99, int(non2xx.group(1)) if non2xx else 0


def bench_http(stack, url, bare_url, headers, job_id, seconds):
    if not shutil.which("wrk"):
        print("wrk: not installed (apt-get install wrk); skipping the HTTP figures")
        return
    rps, p99, bad = run_wrk(f"{url}/api/v1/jobs/{job_id}", seconds, headers)
    brps, bp99, _ = run_wrk(f"{bare_url}/bare", seconds)
    print(f"GET /jobs/{{id}} authenticated: {rps:.0f} req/s, p99 {p99:.1f} ms, non-2xx {bad}")
    print(f"bare Flask route, same gunicorn settings: {brps:.0f} req/s, p99 {bp99:.1f} ms")
    print(f"ratio {rps / brps:.2f} (target >= 0.5), p99 {p99:.1f} ms (target <= 50 ms)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--latency-jobs", type=int, default=30)
    parser.add_argument("--wrk-seconds", type=int, default=10)
    parser.add_argument("--gunicorn-workers", type=int, default=os.cpu_count() * 2 + 1)
    args = parser.parse_args()
    stack = Stack()
    try:
        s = stack.start()
        headers = stack.api_key()
        clip = make_clip(s, "bench720.mp4", CLIP_720P, owner="bench")
        tiny = make_clip(
            s,
            "tiny.mp4",
            [
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=160x120:rate=10:duration=1",
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-pix_fmt",
                "yuv420p",
            ],
            owner="bench",
        )
        url = stack.gunicorn("ffmpeg_api.wsgi:app", args.gunicorn_workers)
        bare_url = stack.gunicorn("bare_app:app", args.gunicorn_workers)
        stack.worker()
        # The health report's components are shown to a caller with a key only.
        health = requests.get(url + "/api/v1/health", headers=headers).json()["components"]
        print(
            f"machine: {os.cpu_count()} cores; gunicorn workers {args.gunicorn_workers}; "
            f"{json.dumps(health['ffmpeg'])}"
        )
        bench_ratio(stack, url, headers, clip, args.runs)
        bench_latency(stack, url, headers, tiny, args.latency_jobs)
        job = requests.get(f"{url}/api/v1/jobs?limit=1", headers=headers).json()["jobs"][0]
        bench_http(stack, url, bare_url, headers, job["id"], args.wrk_seconds)
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
