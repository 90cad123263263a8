"""The s3 storage backend end to end: the API and real RQ worker processes against a real S3
API over HTTP (moto's server on loopback), real ffmpeg, outputs checked with ffprobe. Nothing of
the media is on a shared filesystem: the worker has its own WORK_DIR, the storage root stays
empty."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import subprocess
import threading
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import pytest
import requests
from helpers import finished_job, lavfi_clip, slow_job, submit, wait_for

from servers import free_port, moto_bucket

BUCKET = "media-e2e"


@pytest.fixture(scope="module")
def endpoint():
    with moto_bucket(BUCKET) as url:
        yield url


def s3_settings(settings, endpoint, tmp_path, name="work"):
    return replace(
        settings,
        storage_backend="s3",
        s3_bucket=BUCKET,
        s3_prefix="media",
        s3_endpoint_url=endpoint,
        s3_region="us-east-1",
        s3_addressing_style="path",
        work_dir=str(tmp_path / name),
    )


@pytest.fixture
def s3(settings, endpoint, tmp_path):
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    leftover = client.list_objects_v2(Bucket=BUCKET).get("Contents", [])
    if leftover:
        client.delete_objects(
            Bucket=BUCKET, Delete={"Objects": [{"Key": o["Key"]} for o in leftover]}
        )
    return s3_settings(settings, endpoint, tmp_path), client


@pytest.fixture
def s3_client(s3):
    from ffmpeg_api.api import create_app

    app = create_app(s3[0])
    app.config["TESTING"] = True
    return app.test_client()


def keys(client, prefix="media/") -> list[str]:
    return sorted(
        o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    )


def clip(tmp_path, name="in.mp4", seconds=3, size="320x240") -> str:
    return lavfi_clip(tmp_path / name, size=size, seconds=seconds)


def upload(client, key, path) -> dict:
    with open(path, "rb") as fh:
        r = client.post(
            f"/api/v1/files?name={os.path.basename(path)}",
            headers={**key["headers"], "Content-Type": "application/octet-stream"},
            data=fh.read(),
        )
    assert r.status_code == 201, r.json
    return r.json


def ffprobe_bytes(data: bytes, tmp_path, name="out.mp4") -> dict:
    path = tmp_path / name
    path.write_bytes(data)
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-of", "json", "-show_format", "-show_streams", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def test_upload_convert_download_through_the_bucket(
    s3, s3_client, user_key, start_worker, tmp_path, db_conn
):
    settings, client = s3
    source = clip(tmp_path)
    body = open(source, "rb").read()
    stored = upload(s3_client, user_key, source)
    assert stored["sha256"] == hashlib.sha256(body).hexdigest()
    assert stored["size"] == len(body)
    # The upload is an object, not a file: nothing under the storage root's uploads/.
    assert keys(client) == [f"media/{stored['path']}"]
    assert not os.path.exists(os.path.join(settings.storage_root, stored["path"]))
    # The probe was taken at upload, from the scratch copy (gone since).
    probe = db_conn.execute(
        "SELECT probe, version FROM uploads WHERE path = %s", (stored["path"],)
    ).fetchone()
    assert probe["probe"]["ffprobe"]["format"]["duration"]
    assert probe["version"]

    start_worker(settings)
    job_id = submit(
        s3_client,
        user_key,
        {
            "input": stored["path"],
            "operations": [{"type": "transcode", "video_codec": "h264", "preset": "ultrafast"}],
        },
    )
    job = finished_job(s3_client, user_key, job_id)
    assert job["status"] == "completed", (job["error"], job["logs"] if "logs" in job else "")
    published = keys(client, f"media/output/{job_id}/")
    assert f"media/output/{job_id}/.manifest.json" in published
    assert keys(client, "media/tmp/") == []  # staged copies removed once published
    assert os.listdir(settings.work_dir) == [] or all(
        not n.startswith(job_id) for n in os.listdir(settings.work_dir)
    )

    r = s3_client.get(f"/api/v1/jobs/{job_id}/output", headers=user_key["headers"])
    assert r.status_code == 302
    assert r.headers["Cache-Control"] == "private, no-store"
    presigned = r.headers["Location"]
    download = requests.get(presigned, timeout=10)  # no API key: the signature is the grant
    assert download.status_code == 200
    assert "attachment" in download.headers.get("Content-Disposition", "")
    info = ffprobe_bytes(download.content, tmp_path)
    video = next(s for s in info["streams"] if s["codec_type"] == "video")
    assert (video["codec_name"], video["width"], video["height"]) == ("h264", 320, 240)
    assert abs(float(info["format"]["duration"]) - 3.0) < 0.2

    streamed = s3_client.get(
        f"/api/v1/jobs/{job_id}/output?redirect=false", headers=user_key["headers"]
    )
    assert streamed.status_code == 200 and streamed.data == download.content
    part = s3_client.get(
        f"/api/v1/jobs/{job_id}/output?redirect=false",
        headers={**user_key["headers"], "Range": "bytes=100-199"},
    )
    assert part.status_code == 206
    assert part.data == download.content[100:200]
    assert part.headers["Content-Range"] == f"bytes 100-199/{len(download.content)}"
    bad = s3_client.get(f"/api/v1/jobs/{job_id}/output?redirect=maybe", headers=user_key["headers"])
    assert bad.status_code == 422 and bad.json["error"]["field"] == "redirect"


def test_hls_ladder_is_readable_from_the_bucket(s3, s3_client, user_key, start_worker, tmp_path):
    settings, _client = s3
    stored = upload(s3_client, user_key, clip(tmp_path, seconds=4, size="640x360"))
    start_worker(settings)
    job_id = submit(
        s3_client,
        user_key,
        {
            "input": stored["path"],
            "output": "m3u8",
            "operations": [
                {
                    "type": "hls",
                    "segment_duration": 2,
                    "ladder": [
                        {"height": 360, "video_bitrate": "600k"},
                        {"height": 240, "video_bitrate": "300k"},
                    ],
                }
            ],
        },
    )
    job = finished_job(s3_client, user_key, job_id)
    assert job["status"] == "completed", job

    def fetch(name):
        r = s3_client.get(f"/api/v1/jobs/{job_id}/output?file={name}", headers=user_key["headers"])
        assert r.status_code == 302, (name, r.status_code)
        got = requests.get(r.headers["Location"], timeout=10)
        assert got.status_code == 200, name
        return got

    master = fetch("master.m3u8")
    assert master.headers["Content-Type"] == "application/vnd.apple.mpegurl"
    variants = [ln for ln in master.text.splitlines() if ln and not ln.startswith("#")]
    assert len(variants) == 2
    for variant in variants:
        playlist = fetch(variant)
        assert playlist.headers["Content-Type"] == "application/vnd.apple.mpegurl"
        segment = next(ln for ln in playlist.text.splitlines() if ln and not ln.startswith("#"))
        base = os.path.dirname(variant)
        seg = fetch(f"{base}/{segment}" if base else segment)
        assert seg.headers["Content-Type"] in ("video/mp2t", "video/iso.segment", "video/mp4")
        assert ffprobe_bytes(seg.content, tmp_path, "seg" + os.path.splitext(segment)[1])["streams"]


def test_bucket_unreachable_mid_job_fails_with_a_reason_and_degrades_health(
    settings, user_key, start_worker, tmp_path, clips
):
    """A store of its own, stopped while the job transcodes: saving the outputs fails, the job
    fails saying so (no endpoint in the message), and /health turns degraded, not unhealthy."""
    from ffmpeg_api.api import create_app

    with moto_bucket(BUCKET) as url:
        own = s3_settings(settings, url, tmp_path)
        app = create_app(own)
        app.config["TESTING"] = True
        api = app.test_client()
        stored = upload(api, user_key, os.path.join(settings.storage_root, clips["long.mp4"]))
        assert (
            api.get("/api/v1/health", headers=user_key["headers"]).json["components"]["storage"][
                "status"
            ]
            == "ok"
        )
        start_worker(own)
        job_id = submit(api, user_key, {**slow_job(clips), "input": stored["path"]})
        wait_for(
            lambda: (
                api.get(f"/api/v1/jobs/{job_id}", headers=user_key["headers"]).json["progress"]
                > 0.05
            ),
            timeout=60,
            what="the transcode under way",
        )
    # moto_bucket() has stopped the store.
    job = finished_job(api, user_key, job_id)
    assert job["status"] == "failed", job
    assert "saving the outputs: the object store could not be reached" in job["error"]
    assert url.split("//")[1] not in job["error"]
    time.sleep(5.1)  # past the probe's cache
    health = api.get("/api/v1/health", headers=user_key["headers"])
    assert health.json["status"] == "degraded", health.json
    assert health.json["components"]["storage"]["status"] == "warning"
    assert health.json["components"]["storage"]["backend"] == "s3"


class StallingProxy:
    """An HTTP proxy in front of the store that holds the first request whose path contains
    `stall_on` until released: a worker can be killed exactly while it uploads its outputs."""

    def __init__(self, upstream: str, stall_on: str):
        self.upstream = upstream.split("//")[1]
        self.stall_on = stall_on
        self.stalled = threading.Event()
        self.release = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if proxy.stall_on in self.path and not proxy.stalled.is_set():
                    proxy.stalled.set()
                    proxy.release.wait(60)
                    self.close_connection = True
                    return  # the caller is dead by now; nothing reaches the store
                conn = http.client.HTTPConnection(proxy.upstream, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                headers["Host"] = proxy.upstream
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.release.set()
        self.server.shutdown()


def test_worker_killed_while_uploading_outputs_completes_once(
    s3, s3_client, user_key, start_worker, tmp_path, db_conn
):
    settings, client = s3
    stored = upload(s3_client, user_key, clip(tmp_path))
    proxy = StallingProxy(settings.s3_endpoint_url, "/media/tmp/")
    try:
        through = replace(settings, s3_endpoint_url=proxy.url)
        worker = start_worker(through, name="s3-kill.1.cpu")
        job_id = submit(
            s3_client,
            user_key,
            {
                "input": stored["path"],
                "operations": [{"type": "transcode", "video_codec": "h264", "preset": "ultrafast"}],
            },
        )
        assert proxy.stalled.wait(60), "the worker never uploaded its outputs"
        os.killpg(worker.popen.pid, signal.SIGKILL)
        worker.popen.wait(10)
        proxy.release.set()
        start_worker(settings, name="s3-kill.1.cpu")  # its successor takes the job again
        job = finished_job(s3_client, user_key, job_id, timeout=60)
    finally:
        proxy.close()
    assert job["status"] == "completed", job
    row = db_conn.execute(
        "SELECT retry_count, outputs FROM jobs WHERE id = %s", (job_id,)
    ).fetchone()
    assert row["retry_count"] == 1
    published = keys(client, f"media/output/{job_id}/")
    manifest = json.loads(
        client.get_object(Bucket=BUCKET, Key=f"media/output/{job_id}/.manifest.json")["Body"].read()
    )
    files = [f"media/output/{job_id}/{f['name']}" for f in manifest["files"]]
    assert published == sorted([*files, f"media/output/{job_id}/.manifest.json"])
    assert [f"media/{o}" for o in row["outputs"]] == sorted(files)
    assert keys(client, "media/tmp/") == []  # neither attempt's staging is left
    assert client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
