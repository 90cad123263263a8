#!/usr/bin/env python3
"""Benchmark: requeueing 10,000 stuck jobs. Prints figures, asserts nothing.

Inserts N `processing` rows whose worker stopped reporting two hours ago into a scratch
database, then times what the `ffmpeg_api.ops.stuck_jobs` module runs:

  1. `ffmpeg-api jobs requeue-stuck --older-than 1h --dry-run --json` (the check-mode preview)
  2. `ffmpeg-api jobs requeue-stuck --older-than 1h --json` (each job: a compare-and-swap
     UPDATE, then an RQ enqueue at the front of its queue)
  3. the same again, finding nothing (the second run of the playbook)

and checks the outcome (every row queued with retry_count 1, every RQ job on its queue).
Starts its own PostgreSQL and Redis on loopback (tests/servers.py), so the deployed stack is
not flooded, and stops them.
Usage: .venv/bin/python bench/bench_requeue.py [--jobs 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import psycopg
import redis

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests"))

import helpers  # noqa: E402

from ffmpeg_api.settings import Settings  # noqa: E402

from servers import service_servers  # noqa: E402


def insert_stuck(url: str, n: int) -> None:
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        with cur.copy(
            "COPY jobs (id, status, priority, hardware, queue, input_path, output_format,"
            " operations, worker_id, retry_count, rq_job_id, input_duration) FROM STDIN"
        ) as copy:
            for i in range(n):
                job_id = f"00000000-0000-4000-8000-{i:012d}"
                queue = ("high", "default", "low")[i % 3]
                priority = ("high", "normal", "low")[i % 3]
                copy.write_row(
                    (
                        job_id,
                        "processing",
                        priority,
                        "auto",
                        queue,
                        "uploads/in.mp4",
                        "mp4",
                        '[{"type": "transcode"}]',
                        f"lost-host.{i % 8}.cpu",
                        0,
                        f"{job_id}_0",
                        10,
                    )
                )
        conn.execute(
            "UPDATE jobs SET created_at = now() - interval '3 hours',"
            " started_at = now() - interval '2 hours', heartbeat_at = now() - interval '2 hours',"
            " updated_at = now() - interval '2 hours'"
        )
        conn.commit()


def cli(settings: Settings, *args: str) -> tuple[float, dict]:
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "ffmpeg_api.cli", *args, "--json"],
        env=helpers.env_for(settings),
        capture_output=True,
        text=True,
        timeout=3600,
        check=True,
    )
    return time.perf_counter() - started, json.loads(proc.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    args = parser.parse_args()

    base = tempfile.mkdtemp(prefix="bench-requeue-")
    try:
        with service_servers(base) as (_pg, rd, url):
            run(args.jobs, base, rd, url)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def run(jobs: int, base: str, rd, url: str) -> None:
    storage = os.path.join(base, "storage")
    settings = Settings(database_url=url, redis_url=rd.url(), storage_root=storage)

    started = time.perf_counter()
    insert_stuck(url, jobs)
    print(f"inserted {jobs} stuck rows in {time.perf_counter() - started:.2f} s")

    elapsed, preview = cli(settings, "jobs", "requeue-stuck", "--older-than", "1h", "--dry-run")
    print(
        f"dry run (check mode): {len(preview['requeued'])} would be requeued in "
        f"{elapsed:.2f} s ({jobs / elapsed:,.0f} rows/s)"
    )

    elapsed, done = cli(settings, "jobs", "requeue-stuck", "--older-than", "1h")
    print(
        f"requeue: {len(done['requeued'])} requeued, {len(done['failed'])} failed in "
        f"{elapsed:.2f} s ({len(done['requeued']) / elapsed:,.0f} rows/s)"
    )

    elapsed, again = cli(settings, "jobs", "requeue-stuck", "--older-than", "1h")
    print(f"second run: changed={again['changed']} in {elapsed:.2f} s")

    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT count(*) FILTER (WHERE status = 'queued' AND retry_count = 1), count(*)"
            " FROM jobs"
        ).fetchone()
    r = redis.Redis.from_url(rd.url())
    queued = sum(r.llen(f"rq:queue:{q}") for q in ("high", "default", "low"))
    print(f"check: {rows[0]}/{rows[1]} rows queued with retry 1; {queued} RQ jobs on queues")


if __name__ == "__main__":
    main()
