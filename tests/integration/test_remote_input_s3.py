"""remote_input.fetch of s3://bucket/key against a real S3 API over HTTP (moto's server on
loopback), and against a loopback endpoint that accepts and never answers."""

from __future__ import annotations

import os
import socket
import threading
import time

import boto3
import pytest

from ffmpeg_api.remote_input import InputFetchFailed, fetch
from ffmpeg_api.settings import Settings

from servers import moto_server

BUCKET = "media-in"
OTHER = "media-other"


@pytest.fixture(scope="module")
def clip(clip_files, storage_root):
    with open(os.path.join(storage_root, clip_files["short.mp4"]), "rb") as fh:
        return fh.read()


@pytest.fixture(scope="module")
def endpoint(clip):
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")
    with moto_server() as url:
        s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
        for bucket in (BUCKET, OTHER):
            s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket=BUCKET, Key="clips/short.mp4", Body=clip)
        s3.put_object(Bucket=OTHER, Key="clips/short.mp4", Body=clip)
        yield url


def s3_settings(endpoint, **env):
    return Settings.from_env(
        {
            "INPUT_S3_BUCKETS": BUCKET,
            "S3_ENDPOINT_URL": endpoint,
            "S3_REGION": "us-east-1",
            "S3_ADDRESSING_STYLE": "path",
            **env,
        }
    )


def test_an_object_is_downloaded_whole(endpoint, clip, tmp_path):
    path = fetch(f"s3://{BUCKET}/clips/short.mp4", str(tmp_path), s3_settings(endpoint))
    assert path == str(tmp_path / "short.mp4")
    assert os.listdir(tmp_path) == ["short.mp4"]
    with open(path, "rb") as fh:
        assert fh.read() == clip


def test_a_bucket_not_in_input_s3_buckets_is_refused(endpoint, tmp_path):
    """The object exists and the credentials could read it: the list alone refuses it."""
    with pytest.raises(InputFetchFailed, match=f"bucket '{OTHER}' is not allowed"):
        fetch(f"s3://{OTHER}/clips/short.mp4", str(tmp_path), s3_settings(endpoint))
    assert os.listdir(tmp_path) == []


def test_a_missing_key_fails_clearly(endpoint, tmp_path):
    with pytest.raises(InputFetchFailed, match=f"s3://{BUCKET}/clips/nope.mp4 does not exist"):
        fetch(f"s3://{BUCKET}/clips/nope.mp4", str(tmp_path), s3_settings(endpoint))
    assert os.listdir(tmp_path) == []


def test_a_missing_bucket_fails_clearly(endpoint, tmp_path):
    s = s3_settings(endpoint, INPUT_S3_BUCKETS="no-such-bucket")
    with pytest.raises(InputFetchFailed, match="does not exist"):
        fetch("s3://no-such-bucket/a.mp4", str(tmp_path), s)
    assert os.listdir(tmp_path) == []


def test_an_object_over_the_cap_is_refused_before_the_get(endpoint, tmp_path):
    s = s3_settings(endpoint, MAX_UPLOAD_BYTES="1000")
    with pytest.raises(InputFetchFailed, match=r"over MAX_UPLOAD_BYTES \(1000\)"):
        fetch(f"s3://{BUCKET}/clips/short.mp4", str(tmp_path), s)
    assert os.listdir(tmp_path) == []


def test_an_unreachable_endpoint_fails_clearly(tmp_path):
    with pytest.raises(InputFetchFailed, match="S3 endpoint is unreachable"):
        fetch(f"s3://{BUCKET}/a.mp4", str(tmp_path), s3_settings("http://127.0.0.1:9"))
    assert os.listdir(tmp_path) == []


@pytest.fixture
def silent_endpoint():
    """Accepts connections, reads the request, never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    held = []
    stop = threading.Event()

    def accept():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
                held.append(conn)
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join(2)
    for conn in held:
        conn.close()
    listener.close()


def test_a_silent_endpoint_times_out(silent_endpoint, tmp_path):
    s = s3_settings(silent_endpoint, INPUT_FETCH_TIMEOUT="0.5")
    started = time.monotonic()
    with pytest.raises(InputFetchFailed, match=r"timed out after 0\.5 s"):
        fetch(f"s3://{BUCKET}/clips/short.mp4", str(tmp_path), s)
    assert time.monotonic() - started < 1.5
    assert os.listdir(tmp_path) == []
