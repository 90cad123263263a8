#!/usr/bin/env python3
"""Benchmark: cleaning 100,000 temp files, the service's cleanup versus `find -delete`.

Fills tmp/ of a scratch STORAGE_ROOT with N files last modified two days ago (plus 100 fresh
ones that must survive), then times:

  1. `ffmpeg-api storage cleanup --tmp-older-than 1d --dry-run --json` (the check-mode preview
     that ffmpeg_api.ops.storage_cleanup runs)
  2. `ffmpeg-api storage cleanup --tmp-older-than 1d --json` (what the module runs: the
     service skips running jobs' work directories, then removes every old entry)
  3. the same again, finding nothing (a second run of the playbook)
  4. `find tmp -type f -mtime +1 -delete` on a fresh copy of the same tree (the runbook's
     command, which knows nothing about running jobs)

The CLI reads the jobs table to know which jobs are running, so it needs a database: it uses
the deployed stack's DATABASE_URL/REDIS_URL from /etc/ffmpeg-api/ffmpeg-api.env when this
machine has one (read only; the stack's own storage root is never touched), and otherwise starts
its own PostgreSQL and Redis from the Debian binaries, as the tests do. Prints figures,
asserts nothing but outcomes.
Usage: .venv/bin/python bench/bench_cleanup.py [--files 100000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
CLI = os.path.join(REPO, ".venv", "bin", "ffmpeg-api")
sys.path[:0] = [os.path.join(REPO, "tests"), os.path.join(REPO, "tests", "runbooks")]

from runbook_helpers import ENV_FILE, service_env  # noqa: E402

from servers import service_servers  # noqa: E402


@contextlib.contextmanager
def database_env(scratch: str):
    """DATABASE_URL and REDIS_URL: the deployed stack's, or servers of the benchmark's own."""
    if os.path.exists(ENV_FILE):
        service = service_env()
        yield {"DATABASE_URL": service["DATABASE_URL"], "REDIS_URL": service["REDIS_URL"]}
        return
    with service_servers(os.path.join(scratch, "servers")) as (_pg, rd, url):
        yield {"DATABASE_URL": url, "REDIS_URL": rd.url()}


def fill(root: str, n: int) -> None:
    tmp = os.path.join(root, "tmp")
    for sub in ("tmp", "output", "uploads"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    old = time.time() - 2 * 86400
    for i in range(n):
        path = os.path.join(tmp, f"upload-{i:07d}.part")
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
        os.write(fd, b"x" * 64)
        os.close(fd)
        os.utime(path, (old, old))
    for i in range(100):
        with open(os.path.join(tmp, f"fresh-{i}.part"), "wb") as fh:
            fh.write(b"y")


def timed(argv: list[str], env: dict | None = None) -> tuple[float, str]:
    started = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    return time.perf_counter() - started, proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    args = parser.parse_args()
    n = args.files
    scratch = tempfile.mkdtemp(prefix="bench-cleanup-")
    os.chmod(scratch, 0o755)  # PostgreSQL runs as its own user and must reach its data below
    try:
        with database_env(scratch) as database:
            run(os.path.join(scratch, "storage"), n, {**os.environ, **database})
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def run(root: str, n: int, env: dict) -> None:
    env = {**env, "STORAGE_ROOT": root}
    started = time.perf_counter()
    fill(root, n)
    print(f"filled {n:,} old temp files (+100 fresh) in {time.perf_counter() - started:.1f} s")

    cmd = [CLI, "storage", "cleanup", "--tmp-older-than", "1d", "--json"]
    t_preview, out = timed([*cmd, "--dry-run"], env)
    would = len(json.loads(out)["removed_tmp"])
    t_clean, out = timed(cmd, env)
    removed = len(json.loads(out)["removed_tmp"])
    t_again, out = timed(cmd, env)
    assert json.loads(out)["changed"] is False
    left = len(os.listdir(os.path.join(root, "tmp")))
    assert would == removed == n and left == 100, (would, removed, left)

    shutil.rmtree(root)
    fill(root, n)
    t_find, _ = timed(["find", os.path.join(root, "tmp"), "-type", "f", "-mtime", "+1", "-delete"])
    assert len(os.listdir(os.path.join(root, "tmp"))) == 100

    print(f"service cleanup, check-mode preview : {t_preview:7.2f} s  ({would:,} entries)")
    print(
        f"service cleanup                     : {t_clean:7.2f} s  ({removed:,} removed, "
        f"{n / t_clean:,.0f} files/s)"
    )
    print(f"service cleanup, second run         : {t_again:7.2f} s  (nothing to remove)")
    print(f"find -mtime +1 -delete               : {t_find:7.2f} s  ({n / t_find:,.0f} files/s)")
    print(f"ratio service / find                 : {t_clean / t_find:7.1f} x")


if __name__ == "__main__":
    main()
