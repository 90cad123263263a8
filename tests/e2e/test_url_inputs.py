"""Inputs by URL end to end: the API judges the URL, a real worker fetches it (a loopback HTTP
server, a bucket of a real S3 API), probes and converts the download with real ffmpeg."""

from __future__ import annotations

import functools
import os
import subprocess
import threading
from dataclasses import replace
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import boto3
import pytest
from helpers import finished_job, submit

from servers import moto_bucket

TRANSCODE = [{"type": "transcode", "video_codec": "h264", "preset": "ultrafast"}]


@pytest.fixture
def web_root(tmp_path):
    """A plain HTTP server on loopback serving a directory."""
    root = tmp_path / "web"
    root.mkdir()
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def ffprobe_streams(path) -> list[str]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=codec_type", "-of", "csv=p=0", path],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.split()


def test_http_input_is_fetched_probed_and_converted(
    settings, client, user_key, clips, start_worker, web_root, db_conn
):
    root, base = web_root
    source = os.path.join(settings.storage_root, clips["short.mp4"])
    (root / "clip.mp4").write_bytes(open(source, "rb").read())
    # Loopback is internal: this deployment allows it, as one fetching from its own LAN would.
    allowing = replace(settings, input_allow_http=True, input_allow_private=True)
    from ffmpeg_api.api import create_app

    api = create_app(allowing).test_client()
    start_worker(allowing)
    job_id = submit(api, user_key, {"input": f"{base}/clip.mp4", "operations": TRANSCODE})
    job = finished_job(api, user_key, job_id)
    assert job["status"] == "completed", job["error"]
    out = os.path.join(settings.storage_root, job["output_path"])
    assert ffprobe_streams(out) == ["video", "audio"]
    row = db_conn.execute(
        "SELECT input_duration, output_seconds FROM jobs WHERE id = %s", (job_id,)
    ).fetchone()
    assert abs(row["input_duration"] - 3.0) < 0.2 and row["output_seconds"] > 0
    # The download was the worker's scratch only: nothing of it is published or left.
    assert [os.path.basename(o) for o in job["outputs"]] == [os.path.basename(out)]
    assert not any(n.startswith(job_id) for n in os.listdir(settings.tmp_dir))

    missing = submit(api, user_key, {"input": f"{base}/nope.mp4", "operations": TRANSCODE})
    failed = finished_job(api, user_key, missing)
    assert failed["status"] == "failed"
    assert "404" in failed["error"], failed["error"]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/clip.mp4",
        "https://169.254.169.254/latest/meta-data/",
        "https://[::ffff:127.0.0.1]/clip.mp4",
        "https://localhost/clip.mp4",
        "file:///etc/passwd",
        "ftp://example.com/clip.mp4",
    ],
)
def test_internal_or_unsupported_urls_are_refused_at_submission(
    settings, user_key, make_settings, url
):
    from ffmpeg_api.api import create_app

    api = create_app(make_settings(input_allow_http=True)).test_client()
    r = api.post(
        "/api/v1/convert", headers=user_key["headers"], json={"input": url, "operations": TRANSCODE}
    )
    assert r.status_code == 422, r.json
    assert r.json["error"]["field"] == "input"


def test_plain_http_is_refused_unless_allowed(settings, user_key):
    from ffmpeg_api.api import create_app

    api = create_app(settings).test_client()
    r = api.post(
        "/api/v1/convert",
        headers=user_key["headers"],
        json={"input": "http://example.com/clip.mp4", "operations": TRANSCODE},
    )
    assert r.status_code == 422 and r.json["error"]["field"] == "input"
    assert "use https" in r.json["error"]["message"]


def test_s3_input_from_an_allowed_bucket(settings, user_key, clips, start_worker, tmp_path):
    from ffmpeg_api.api import create_app

    with moto_bucket("partner-media") as endpoint:
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        s3.upload_file(
            os.path.join(settings.storage_root, clips["short.mp4"]), "partner-media", "in/a.mp4"
        )
        allowing = replace(
            settings,
            s3_endpoint_url=endpoint,
            s3_region="us-east-1",
            s3_addressing_style="path",
            input_s3_buckets=("partner-media",),
        )
        api = create_app(allowing).test_client()
        refused = api.post(
            "/api/v1/convert",
            headers=user_key["headers"],
            json={"input": "s3://other-bucket/in/a.mp4", "operations": TRANSCODE},
        )
        assert refused.status_code == 422 and refused.json["error"]["field"] == "input"
        start_worker(allowing)
        job_id = submit(
            api, user_key, {"input": "s3://partner-media/in/a.mp4", "operations": TRANSCODE}
        )
        job = finished_job(api, user_key, job_id)
        assert job["status"] == "completed", job["error"]
        assert ffprobe_streams(os.path.join(settings.storage_root, job["output_path"])) == [
            "video",
            "audio",
        ]
        gone = submit(
            api, user_key, {"input": "s3://partner-media/in/none.mp4", "operations": TRANSCODE}
        )
        failed = finished_job(api, user_key, gone)
        assert failed["status"] == "failed" and "does not exist" in failed["error"]
