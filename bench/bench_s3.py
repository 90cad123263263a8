#!/usr/bin/env python3
"""s3 backend benchmark: prints figures, asserts nothing (targets are for people to compare).

Against a real S3 API (moto's server) on loopback:

  1. overhead ratio: end-to-end job time / the same ffmpeg command run directly, on
     bench_service's 10 s 720p clip -> 480p h264 (target <= 1.15; the local backend's is
     bench_service's first figure). The job downloads its input from the bucket, runs ffmpeg
     in WORK_DIR, uploads and publishes the output; the direct run reads a local copy.
  2. upload throughput: POST /api/v1/files (raw body, through gunicorn) into the bucket
     against boto3's own upload_fileobj of the same file to the same server (target >= 0.8).
     The file is the clip repeated up to --upload-mib MiB (a real MP4 at its start, so the
     API's probe of the upload is the probe of a video).

Starts its own moto server, PostgreSQL, Redis, gunicorn and one RQ worker on loopback, and
stops them. Each figure is the median of --runs runs.
Usage: PYTHONPATH=$PWD/app .venv/bin/python bench/bench_s3.py [--runs 3] [--upload-mib 256]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bench_service as svc  # noqa: E402  (puts tests/ on sys.path)
import boto3  # noqa: E402
import requests  # noqa: E402

from servers import moto_server  # noqa: E402

BUCKET = "media-bench"
REGION = "us-east-1"


def upload_api(url, headers, path, name) -> tuple[float, str]:
    """Seconds a raw-body POST /files of `path` takes; the stored relative path."""
    with open(path, "rb") as fh:
        t0 = time.perf_counter()
        r = requests.post(
            f"{url}/api/v1/files",
            params={"name": name},
            headers={**headers, "Content-Type": "application/octet-stream"},
            data=fh,
        )
        elapsed = time.perf_counter() - t0
    r.raise_for_status()
    return elapsed, r.json()["path"]


def upload_boto3(client, path, key) -> float:
    """Seconds boto3's upload_fileobj (its default TransferConfig) takes for `path`."""
    with open(path, "rb") as fh:
        t0 = time.perf_counter()
        client.upload_fileobj(fh, BUCKET, key)
        return time.perf_counter() - t0


def repeated(src: str, dest: str, mib: int) -> int:
    """`src`'s bytes repeated into `dest` up to `mib` MiB; the size."""
    with open(src, "rb") as fh:
        data = fh.read()
    target = mib * 1024 * 1024
    with open(dest, "wb") as out:
        written = 0
        while written < target:
            chunk = data[: target - written]
            out.write(chunk)
            written += len(chunk)
    return written


def bench_upload(url, headers, client, s, path, runs):
    size = os.path.getsize(path)
    mib = size / 1024 / 1024
    api, raw = [], []
    for i in range(runs):
        # Alternate which goes first, so neither always meets a warmer (or fuller) server.
        order = ("api", "boto3") if i % 2 == 0 else ("boto3", "api")
        for which in order:
            if which == "api":
                seconds, relpath = upload_api(url, headers, path, "big.mp4")
                api.append(seconds)
                key = f"{s.s3_prefix}/{relpath}"
            else:
                key = f"raw/big-{i}.mp4"
                raw.append(upload_boto3(client, path, key))
            client.delete_object(Bucket=BUCKET, Key=key)  # moto keeps objects in memory
    a, b = mib / statistics.median(api), mib / statistics.median(raw)
    print(
        f"upload ({mib:.0f} MiB file): POST /api/v1/files median "
        f"{statistics.median(api):.2f}s = {a:.1f} MiB/s; boto3 upload_fileobj median "
        f"{statistics.median(raw):.2f}s = {b:.1f} MiB/s; ratio {a / b:.3f} "
        f"(target >= 0.80; runs={runs})"
    )
    print(
        "  all runs (s): api "
        + ", ".join(f"{x:.2f}" for x in api)
        + "; boto3 "
        + ", ".join(f"{x:.2f}" for x in raw)
    )
    return a / b


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--upload-mib", type=int, default=256)
    parser.add_argument("--gunicorn-workers", type=int, default=os.cpu_count() * 2 + 1)
    args = parser.parse_args()
    # moto accepts any credentials; the service's processes inherit these from env_for.
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    with moto_server() as endpoint:
        client = boto3.client("s3", endpoint_url=endpoint, region_name=REGION)
        client.create_bucket(Bucket=BUCKET)
        stack = svc.Stack()
        try:
            s = stack.start(
                storage_backend="s3",
                s3_bucket=BUCKET,
                s3_prefix="media",
                s3_endpoint_url=endpoint,
                s3_region=REGION,
                s3_addressing_style="path",
                work_dir=os.path.join(stack.base, "work"),
            )
            headers = stack.api_key()
            local = os.path.join(stack.base, "media")
            os.makedirs(local)
            clip_path = svc.generate(os.path.join(local, "bench720.mp4"), svc.CLIP_720P)
            big = os.path.join(local, "big.mp4")
            size = repeated(clip_path, big, args.upload_mib)
            url = stack.gunicorn("ffmpeg_api.wsgi:app", args.gunicorn_workers)
            stack.worker()
            health = requests.get(url + "/api/v1/health", headers=headers).json()["components"]
            print(
                f"machine: {os.cpu_count()} cores; gunicorn workers {args.gunicorn_workers}; "
                f"storage {json.dumps(health['storage'])}; "
                f"upload file {size} bytes ({size / 1024 / 1024:.0f} MiB)"
            )
            _seconds, clip = upload_api(url, headers, clip_path, "bench720.mp4")
            svc.bench_ratio(stack, url, headers, clip, args.runs, local_path=clip_path, target=1.15)
            bench_upload(url, headers, client, s, big, args.runs)
        finally:
            stack.stop()


if __name__ == "__main__":
    main()
