"""`ffmpeg-api storage usage/cleanup`, dead attempts and the storage quota with the s3 backend:
real PostgreSQL rows and a real S3 API (moto's server on loopback, spoken to over HTTP)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import boto3
import pytest
from click.testing import CliRunner
from helpers import env_for

from ffmpeg_api import housekeeping, mediastore, metrics, storage_quota
from ffmpeg_api.cli import main

from servers import free_port, moto_bucket

BUCKET = "media-ops"


@pytest.fixture(scope="module")
def endpoint():
    with moto_bucket(BUCKET) as url:
        yield url


@pytest.fixture
def s3s(settings, endpoint, tmp_path):
    """Settings of the s3 backend, with a prefix and a WORK_DIR of this test's own."""
    work = tmp_path / "work"
    work.mkdir()
    return replace(
        settings,
        storage_backend="s3",
        s3_bucket=BUCKET,
        s3_prefix=f"t-{uuid.uuid4().hex[:8]}",
        s3_endpoint_url=endpoint,
        s3_region="us-east-1",
        s3_addressing_style="path",
        work_dir=str(work),
    )


@pytest.fixture
def s3(endpoint):
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


def put(s3, s, rel: str, size: int) -> None:
    s3.put_object(Bucket=BUCKET, Key=f"{s.s3_prefix}/{rel}", Body=b"x" * size)


def put_many(s3, s, rels: list[str], size: int = 1) -> None:
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda rel: put(s3, s, rel, size), rels))


def keys(s3, s) -> list[str]:
    out = []
    for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=BUCKET, Prefix=f"{s.s3_prefix}/"
    ):
        out += [o["Key"][len(s.s3_prefix) + 1 :] for o in page.get("Contents", [])]
    return sorted(out)


def multipart(s3, s) -> list[str]:
    ups = s3.list_multipart_uploads(Bucket=BUCKET, Prefix=f"{s.s3_prefix}/").get("Uploads", [])
    return sorted(u["Key"][len(s.s3_prefix) + 1 :] for u in ups)


def start_multipart(s3, s, rel: str) -> None:
    s3.create_multipart_upload(Bucket=BUCKET, Key=f"{s.s3_prefix}/{rel}")


def run(s, *args) -> dict:
    """The CLI in this process (click's runner) with the settings' environment."""
    result = CliRunner().invoke(main, list(args), env=env_for(s), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def insert_job(conn, status: str, *, user: str = "alice", retry_count: int = 0, size: int = 0):
    job_id = str(uuid.uuid4())
    conn.execute(
        "INSERT INTO jobs (id, status, priority, hardware, queue, input_path, output_format,"
        " operations, retry_count, user_id, output_size, updated_at)"
        " VALUES (%s, %s, 'normal', 'auto', 'default', 'uploads/x.mp4', 'mp4',"
        " '[{\"type\": \"transcode\"}]', %s, %s, %s, now() - interval '1 hour')",
        (job_id, status, retry_count, user, size),
    )
    conn.commit()
    return job_id


def scratch_entry(s, name: str, *, age: float) -> str:
    path = os.path.join(s.scratch_dir, name)
    os.makedirs(path)
    with open(os.path.join(path, "out.mp4"), "wb") as fh:
        fh.write(b"s" * 10)
    for p in (os.path.join(path, "out.mp4"), path):
        os.utime(p, (time.time() - age, time.time() - age))
    return path


def test_usage_reports_the_bucket_by_area_and_entry_and_the_scratch_disk(s3s, s3):
    upload = uuid.uuid4().hex
    job = str(uuid.uuid4())
    put(s3, s3s, f"uploads/{upload}/clip.mp4", 300)
    put(s3, s3s, f"output/{job}/out.mp4", 200)
    put(s3, s3s, f"output/{job}/.manifest.json", 20)
    put(s3, s3s, f"tmp/{job}.0/out.mp4", 50)
    with open(os.path.join(s3s.scratch_dir, "in.mp4"), "wb") as fh:
        fh.write(b"w" * 7)
    usage = run(s3s, "storage", "usage", "--json", "--top", "2")
    assert usage["backend"] == "s3" and usage["bucket"] == BUCKET
    assert usage["prefix"] == s3s.s3_prefix and usage["scratch_dir"] == s3s.work_dir
    assert usage["areas"]["uploads"] == {"bytes": 300, "objects": 1, "files": 1}
    assert usage["areas"]["output"] == {"bytes": 220, "objects": 2, "files": 2}
    assert usage["areas"]["tmp"] == {"bytes": 50, "objects": 1, "files": 1}
    assert usage["top"] == [
        {"path": f"uploads/{upload}", "bytes": 300},
        {"path": f"output/{job}", "bytes": 220},
    ]
    assert usage["scratch"] == {"bytes": 7, "files": 1}
    st = os.statvfs(s3s.work_dir)
    assert 0 < usage["free_bytes"] <= usage["total_bytes"] == st.f_blocks * st.f_frsize
    assert 0 < usage["free_percent"] <= 100 and usage["writable"] is True


def test_cleanup_plans_in_dry_run_then_removes_exactly_that_once(s3s, s3, db_conn):
    running = insert_job(db_conn, "processing")
    failed = insert_job(db_conn, "failed")
    done = insert_job(db_conn, "completed", size=5)
    ghost = str(uuid.uuid4())
    # staged objects: a dead attempt's, a running job's, a stray one; then fresh ones
    put(s3, s3s, f"tmp/{failed}.0/out.mp4", 40)
    put(s3, s3s, f"tmp/{running}.0/out.mp4", 40)
    put(s3, s3s, "tmp/health-stale", 16)
    # outputs: an orphan with more than one batch of keys, a failed job's, a completed job's
    put_many(s3, s3s, [f"output/{ghost}/seg{i:05d}.ts" for i in range(1500)], size=2)
    put(s3, s3s, f"output/{failed}/out.mp4", 30)
    put(s3, s3s, f"output/{done}/out.mp4", 5)
    put(s3, s3s, f"output/{done}/.manifest.json", 5)
    # multipart uploads left by killed processes (moto dates them all 2010-11-10)
    start_multipart(s3, s3s, f"uploads/{uuid.uuid4().hex}/big.mp4")
    start_multipart(s3, s3s, f"tmp/{failed}.0/big.mp4")
    start_multipart(s3, s3s, f"tmp/{running}.0/big.mp4")
    # upload records: one with its object, one whose object is gone
    kept_upload = f"uploads/{uuid.uuid4().hex}/a.mp4"
    gone_upload = f"uploads/{uuid.uuid4().hex}/b.mp4"
    put(s3, s3s, kept_upload, 3)
    for path in (kept_upload, gone_upload):
        db_conn.execute(
            "INSERT INTO uploads (path, user_id, size, sha256) VALUES (%s, 'alice', 3, '')",
            (path,),
        )
    db_conn.commit()
    # scratch: an old dead entry, an old running job's work directory, a fresh file
    stale_scratch = scratch_entry(s3s, f"{failed}.0", age=3 * 86400)
    scratch_entry(s3s, f"{running}.0", age=3 * 86400)
    time.sleep(6.5)  # the objects above are now older than the threshold (6 s)
    put(s3, s3s, "tmp/fresh-upload.part", 8)
    slow = f"uploads/{uuid.uuid4().hex}/slow.mp4"  # begun long ago, still receiving parts
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key=f"{s3s.s3_prefix}/{slow}")["UploadId"]
    s3.upload_part(
        Bucket=BUCKET, Key=f"{s3s.s3_prefix}/{slow}", UploadId=upload_id, PartNumber=1, Body=b"p"
    )
    with open(os.path.join(s3s.scratch_dir, "fresh.part"), "wb") as fh:
        fh.write(b"f")

    def state():
        db_conn.rollback()
        rows = [r["path"] for r in db_conn.execute("SELECT path FROM uploads ORDER BY path")]
        return keys(s3, s3s), multipart(s3, s3s), sorted(os.listdir(s3s.scratch_dir)), rows

    args = ["storage", "cleanup", "--tmp-older-than", "6s", "--orphans", "--json"]
    before = state()
    preview = run(s3s, *args, "--dry-run")
    assert state() == before
    assert preview["changed"] is True and preview["dry_run"] is True
    real = run(s3s, *args)
    assert {k: v for k, v in real.items() if k != "dry_run"} == {
        k: v for k, v in preview.items() if k != "dry_run"
    }
    assert real["backend"] == "s3"
    assert real["removed_tmp"] == sorted([f"tmp/{failed}.0", "tmp/health-stale"])
    assert real["removed_scratch"] == [stale_scratch]
    assert sorted(real["aborted_uploads"]) == sorted(
        [u for u in before[1] if not u.startswith(f"tmp/{running}.0/") and u != slow]
    )
    assert len(real["aborted_uploads"]) == 2
    assert real["removed_orphans"] == sorted([f"output/{ghost}", f"output/{failed}"])
    assert real["removed_upload_records"] == [gone_upload]
    assert real["objects_removed"] == 1500 + 1 + 2
    assert real["bytes_freed"] == 1500 * 2 + 30 + 40 + 16 + 10

    remaining, uploads_left, scratch_left, rows = state()
    assert remaining == sorted(
        [
            f"tmp/{running}.0/out.mp4",
            "tmp/fresh-upload.part",
            f"output/{done}/out.mp4",
            f"output/{done}/.manifest.json",
            kept_upload,
        ]
    )
    assert uploads_left == sorted([f"tmp/{running}.0/big.mp4", slow])
    assert scratch_left == sorted([f"{running}.0", "fresh.part"])
    assert rows == [kept_upload]

    again = run(s3s, *args)
    assert again["changed"] is False and again["objects_removed"] == 0
    assert run(s3s, *args, "--dry-run")["changed"] is False


def test_cleanup_through_the_command_line_as_the_module_runs_it(s3s, s3, db_conn):
    failed = insert_job(db_conn, "cancelled")
    put_many(s3, s3s, [f"output/{failed}/f{i:04d}" for i in range(1001)])
    cmd = [sys.executable, "-m", "ffmpeg_api.cli", "storage", "cleanup", "--orphans", "--json"]
    env = env_for(s3s)
    out = json.loads(subprocess.run(cmd, env=env, capture_output=True, check=True).stdout)
    assert out["changed"] is True and out["objects_removed"] == 1001
    assert keys(s3, s3s) == []
    out = json.loads(subprocess.run(cmd, env=env, capture_output=True, check=True).stdout)
    assert out["changed"] is False


def test_dead_attempts_lose_their_scratch_dirs_and_staged_objects(s3s, s3, db_conn):
    running = insert_job(db_conn, "processing", retry_count=2)
    elsewhere = insert_job(db_conn, "queued", retry_count=1)
    for attempt in (1, 2):  # .1 superseded (its dir and its objects), .2 live
        scratch_entry(s3s, f"{running}.{attempt}", age=0)
        put(s3, s3s, f"tmp/{running}.{attempt}/out.mp4", 4)
    put(s3, s3s, f"tmp/{elsewhere}.0/out.mp4", 4)  # staged on a host that is gone
    put(s3, s3s, f"tmp/{elsewhere}.1/out.mp4", 4)  # the current attempt's
    removed = housekeeping.remove_dead_attempt_dirs(db_conn, s3s)
    assert removed == sorted([f"tmp/{running}.1", f"tmp/{elsewhere}.0"])
    assert sorted(os.listdir(s3s.scratch_dir)) == [f"{running}.2"]
    assert keys(s3, s3s) == sorted([f"tmp/{running}.2/out.mp4", f"tmp/{elsewhere}.1/out.mp4"])
    assert housekeeping.attempt_dirs(s3s) == {
        running: [(2, os.path.join(s3s.scratch_dir, f"{running}.2"))]
    }
    assert housekeeping.remove_dead_attempt_dirs(db_conn, s3s) == []


@pytest.mark.parametrize("jobs_of_alice", [1, 3])
def test_quota_counts_outputs_still_in_the_bucket(s3s, s3, db_conn, jobs_of_alice):
    """One job: one single-key listing; three jobs of the three there are: one delimited
    listing of output/ (fewer requests). Both answer the same."""
    stored = [insert_job(db_conn, "completed", size=100) for _ in range(jobs_of_alice - 1)]
    archived = insert_job(db_conn, "completed", size=1000)  # archived with removal
    for job in stored:
        put(s3, s3s, f"output/{job}/out.mp4", 1)
        put(s3, s3s, f"output/{job}/.manifest.json", 1)
    db_conn.execute(
        "INSERT INTO uploads (path, user_id, size, sha256) VALUES ('uploads/u/x', 'alice', 7, '')"
    )
    db_conn.commit()
    assert archived
    assert storage_quota.stored_bytes(db_conn, s3s, "alice") == 7 + 100 * len(stored)
    # the free-space reserve does not apply to a bucket
    huge = replace(s3s, storage_free_reserve_bytes=1 << 62)
    storage_quota.upload_budget(db_conn, huge, "alice", declared=10)(10, 10)


def _sample(text: str, name: str) -> float | None:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(match.group(1)) if match else None


def test_metrics_watch_the_scratch_disk_and_probe_the_bucket(s3s, settings):
    text = metrics.render(s3s).decode()
    st = os.statvfs(s3s.work_dir)
    size = 'ffmpeg_scratch_filesystem_size_bytes{backend="s3"}'
    assert _sample(text, size) == st.f_blocks * st.f_frsize
    assert _sample(text, 'ffmpeg_scratch_filesystem_avail_bytes{backend="s3"}') > 0
    assert _sample(text, 'ffmpeg_storage_backend_up{backend="s3"}') == 1
    assert "ffmpeg_storage_filesystem_size_bytes " not in text  # no local storage root
    # a store that does not answer: 0, within the scrape's wait
    dead = replace(s3s, s3_endpoint_url=f"http://127.0.0.1:{free_port()}")
    started = time.monotonic()
    text = metrics.render(dead).decode()
    assert _sample(text, 'ffmpeg_storage_backend_up{backend="s3"}') == 0
    assert time.monotonic() - started < mediastore.PROBE_WAIT + 5
    # the local backend keeps its series, and adds these
    text = metrics.render(settings).decode()
    assert _sample(text, "ffmpeg_storage_filesystem_size_bytes") > 0
    assert _sample(text, 'ffmpeg_storage_backend_up{backend="local"}') == 1
    assert _sample(text, 'ffmpeg_scratch_filesystem_size_bytes{backend="local"}') > 0


ARCHIVE_MODULE = os.path.join(
    os.path.dirname(__file__),
    "..",
    "..",
    "collections/ansible_collections/ffmpeg_api/ops/plugins/modules/storage_archive.py",
)


def archive(tmp_path, s, endpoint: str, *, check: bool = False, **args) -> dict:
    env_file = tmp_path / "ffmpeg-api.env"
    env_file.write_text(
        f"STORAGE_ROOT={s.storage_root}\nSTORAGE_BACKEND=s3\nS3_BUCKET={s.s3_bucket}\n"
        f"S3_PREFIX={s.s3_prefix}\nS3_ENDPOINT_URL={s.s3_endpoint_url}\nS3_REGION=us-east-1\n"
        "S3_ADDRESSING_STYLE=path\nAWS_ACCESS_KEY_ID=test\nAWS_SECRET_ACCESS_KEY=test\n"
    )
    tomorrow = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 86400))
    module_args = {
        "bucket": "archive-ops",
        "prefix": f"{s.s3_prefix}/",
        "env_file": str(env_file),
        "modified_before": tomorrow,
        "endpoint_url": endpoint,
        "access_key": "test",
        "secret_key": "test",
        "_ansible_check_mode": check,
        **args,
    }
    path = tmp_path / "args.json"
    path.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": module_args}))
    proc = subprocess.run(
        [sys.executable, ARCHIVE_MODULE, str(path)], capture_output=True, text=True, timeout=300
    )
    out = json.loads(proc.stdout)
    assert not out.get("failed"), out
    return out


@pytest.fixture
def archive_bucket(s3):
    try:
        s3.create_bucket(Bucket="archive-ops")
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass


def archived(s3, s) -> dict[str, int]:
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket="archive-ops", Prefix=f"{s.s3_prefix}/"
    ):
        out.update({o["Key"][len(s.s3_prefix) + 1 :]: o["Size"] for o in page.get("Contents", [])})
    return out


def test_archive_copies_server_side_verifies_then_removes_once(
    s3s, s3, endpoint, archive_bucket, tmp_path
):
    one, two = str(uuid.uuid4()), str(uuid.uuid4())
    put(s3, s3s, f"output/{one}/a.mp4", 100)
    put(s3, s3s, f"output/{one}/.manifest.json", 10)
    put(s3, s3s, f"output/{two}/b.mp4", 200)
    put(s3, s3s, f"output/{two}/seg.ts", 20)
    put(s3, s3s, f"output/{two}/.manifest.json", 10)
    put(s3, s3s, f"uploads/{uuid.uuid4().hex}/in.mp4", 5)  # not an output
    before = keys(s3, s3s)
    args = {"extensions": ["mp4"], "remove_archived": True}
    preview = archive(tmp_path, s3s, endpoint, check=True, **args)
    assert keys(s3, s3s) == before and archived(s3, s3s) == {}
    done = archive(tmp_path, s3s, endpoint, **args)
    for key in ("uploaded", "removed", "bytes_uploaded", "bytes_removed", "changed"):
        assert done[key] == preview[key], key
    assert done["backend"] == "s3" and done["changed"] is True
    assert done["server_side_copies"] == 2
    assert sorted(done["uploaded"]) == sorted(
        [f"{s3s.s3_prefix}/{one}/a.mp4", f"{s3s.s3_prefix}/{two}/b.mp4"]
    )
    # job one: its only file archived, so its lone manifest goes too; job two keeps the rest
    assert sorted(done["removed"]) == sorted(
        [f"output/{one}/a.mp4", f"output/{one}/.manifest.json", f"output/{two}/b.mp4"]
    )
    assert archived(s3, s3s) == {f"{one}/a.mp4": 100, f"{two}/b.mp4": 200}
    assert [k for k in keys(s3, s3s) if k.startswith("output/")] == sorted(
        [f"output/{two}/.manifest.json", f"output/{two}/seg.ts"]
    )
    again = archive(tmp_path, s3s, endpoint, **args)
    assert again["changed"] is False and again["uploaded"] == again["removed"] == []


def test_archive_streams_across_endpoints_and_removes_in_batches(
    s3s, s3, endpoint, archive_bucket, tmp_path
):
    job = str(uuid.uuid4())
    put_many(s3, s3s, [f"output/{job}/s{i:04d}.ts" for i in range(1001)], size=3)
    put(s3, s3s, f"output/{job}/.manifest.json", 10)
    other = endpoint.replace("127.0.0.1", "localhost")  # another endpoint URL: no CopyObject
    kept = archive(tmp_path, s3s, other)  # without removal first: archived, nothing deleted
    assert len(kept["uploaded"]) == 1002 and kept["removed"] == []
    assert kept["server_side_copies"] == 0
    assert len(keys(s3, s3s)) == 1002
    done = archive(tmp_path, s3s, other, remove_archived=True)
    assert done["uploaded"] == [] and len(done["already_archived"]) == 1002
    assert len(done["removed"]) == 1002 and done["removed"][-1].endswith("/.manifest.json")
    assert keys(s3, s3s) == [] and len(archived(s3, s3s)) == 1002
    assert archive(tmp_path, s3s, other, remove_archived=True)["changed"] is False
