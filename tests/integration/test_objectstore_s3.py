"""The s3 storage backend against a real S3 API over HTTP (moto's server on loopback)."""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import replace

import pytest
import requests

from ffmpeg_api import objectstore
from ffmpeg_api.errors import PayloadTooLarge, UploadIncomplete

from servers import moto_bucket

BUCKET = "media-test"


@pytest.fixture(scope="module")
def endpoint():
    with moto_bucket(BUCKET) as url:
        yield url


@pytest.fixture
def store(endpoint, base_settings):
    s = replace(
        base_settings,
        storage_backend="s3",
        s3_bucket=BUCKET,
        s3_prefix="t",
        s3_endpoint_url=endpoint,
        s3_region="us-east-1",
        s3_addressing_style="path",
    )
    st = objectstore.S3Store.from_settings(s)
    st.delete_prefix("")
    return st


def multipart_uploads(store) -> list:
    return store.client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])


def all_keys(store) -> list[str]:
    return sorted(rel for rel, _s, _m in store.list(""))


class Chunks(io.RawIOBase):
    """A body that yields `total` bytes, and can fail after `fail_after` of them."""

    def __init__(self, total: int, fail_after: int | None = None):
        self.total, self.sent, self.fail_after = total, 0, fail_after
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        if self.fail_after is not None and self.sent >= self.fail_after:
            raise OSError("client went away")
        n = min(size if size > 0 else 1 << 20, self.total - self.sent)
        data = bytes((self.sent + i) % 251 for i in range(n))
        self.sent += n
        self.digest.update(data)
        return data


def test_a_multipart_upload_streams_and_answers_size_and_sha256(store):
    body = Chunks(20 * 1024 * 1024 + 123)  # three parts of 8 MiB at most
    stored = store.save_stream("big clip.mp4", body, max_bytes=1 << 30)
    assert stored.size == body.total
    assert stored.sha256 == body.digest.hexdigest()
    assert stored.path.startswith("uploads/") and stored.path.endswith("/big_clip.mp4")
    head = store.head(stored.path)
    assert head["ContentLength"] == body.total
    assert head["ContentType"] == "video/mp4"
    assert multipart_uploads(store) == []


def test_a_small_upload_is_one_object(store):
    stored = store.save_stream("a.png", io.BytesIO(b"x" * 1000), max_bytes=1 << 30)
    assert all_keys(store) == [stored.path]
    assert store.get(stored.path)["Body"].read() == b"x" * 1000


@pytest.mark.parametrize(
    ("body", "kwargs", "error"),
    [
        (Chunks(12 * 1024 * 1024), {"max_bytes": 10 * 1024 * 1024}, PayloadTooLarge),
        (Chunks(30 * 1024 * 1024, fail_after=17 * 1024 * 1024), {"max_bytes": 1 << 30}, OSError),
        (
            Chunks(9 * 1024 * 1024),
            {"max_bytes": 1 << 30, "expected_size": 10 << 20},
            UploadIncomplete,
        ),
    ],
    ids=["too-large", "client-gone-mid-part", "short-of-content-length"],
)
def test_a_failed_upload_leaves_no_object_and_no_multipart(store, body, kwargs, error):
    with pytest.raises(error):
        store.save_stream("x.mp4", body, **kwargs)
    assert all_keys(store) == []
    assert multipart_uploads(store) == []


def test_a_budget_refusal_aborts_the_multipart(store):
    def budget(size, _chunk):
        if size > 9 * 1024 * 1024:
            raise PayloadTooLarge("over quota")

    with pytest.raises(PayloadTooLarge):
        store.save_stream("x.mp4", Chunks(16 * 1024 * 1024), max_bytes=1 << 30, budget=budget)
    assert all_keys(store) == []
    assert multipart_uploads(store) == []


def test_outputs_are_published_all_at_once_with_their_content_types(store, tmp_path):
    work = tmp_path / "job.0"
    (work / "v0").mkdir(parents=True)
    (work / "master.m3u8").write_text("#EXTM3U\nv0/index.m3u8\n")
    (work / "v0" / "index.m3u8").write_text("#EXTM3U\nseg_000.ts\n")
    (work / "v0" / "seg_000.ts").write_bytes(b"\x47" * 1880)
    files = store.upload_dir(str(work), "tmp/job.0")
    assert [f for f, _ in files] == ["master.m3u8", "v0/index.m3u8", "v0/seg_000.ts"]
    assert store.published("output/job") is None  # staged, not published
    store.publish("tmp/job.0", "output/job", files)
    assert [f["name"] for f in store.published("output/job")] == [f for f, _ in files]
    assert all_keys(store) == [
        "output/job/.manifest.json",
        "output/job/master.m3u8",
        "output/job/v0/index.m3u8",
        "output/job/v0/seg_000.ts",
    ]
    types = {r: store.head(r)["ContentType"] for r in all_keys(store)}
    assert types["output/job/master.m3u8"] == "application/vnd.apple.mpegurl"
    assert types["output/job/v0/seg_000.ts"] == "video/mp2t"
    assert (
        json.loads(store.get("output/job/.manifest.json")["Body"].read())["files"][2]["size"]
        == 1880
    )


def test_presigned_urls_and_ranges_over_http(store):
    stored = store.save_stream("r.mp4", io.BytesIO(bytes(range(256)) * 40), max_bytes=1 << 30)
    url = store.presigned_url(stored.path, ttl=60, download_name="r.mp4")
    whole = requests.get(url, timeout=10)
    assert whole.status_code == 200 and whole.content == bytes(range(256)) * 40
    assert "attachment" in whole.headers["Content-Disposition"]
    part = requests.get(url, headers={"Range": "bytes=10-19"}, timeout=10)
    assert part.status_code == 206 and part.content == bytes(range(10, 20))
    got = store.get(stored.path, "bytes=250-261")
    assert got["ContentRange"] == "bytes 250-261/10240"
    assert got["Body"].read() == bytes(range(250, 256)) + bytes(range(6))


def test_removal_goes_in_batches_and_probe_round_trips(store):
    keys = [f"tmp/many/{i:05d}" for i in range(2100)]
    for k in keys[:5]:
        store.client.put_object(Bucket=BUCKET, Key=store.key(k), Body=b"1")
    assert store.delete_keys(keys) == 2100  # three DeleteObjects calls; absent keys are fine
    assert all_keys(store) == []
    report = store.probe()
    assert report["bucket"] == BUCKET and report["latency_ms"] >= 0
    assert all_keys(store) == []


def test_a_stale_multipart_is_found_and_gone_once_aborted(store):
    """(moto dates every multipart upload 2010-11-10, so only "older than" is exercised.)"""
    key = store.key("uploads/x/killed.mp4")
    up = store.client.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    assert (key, up) in store.stale_multipart_uploads(older_than_seconds=3600)
    store.client.abort_multipart_upload(Bucket=BUCKET, Key=key, UploadId=up)
    assert (key, up) not in store.stale_multipart_uploads(older_than_seconds=3600)
