"""Storage full: old temp files and orphans go, live outputs stay, old outputs land in S3.

The fault is injected into the deployed storage root: a temp directory untouched for three days
(and a fresh one), an output directory whose job does not exist, and outputs of two completed
jobs, one last modified two months ago. S3 is a moto server this test starts on a free port.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
import uuid

import pytest
from runbook_helpers import (
    assert_second_run_changes_nothing,
    playbook,
    sql,
    tree_digest,
)

BUCKET = "ffmpeg-api-archive"
SECRET = "infra-secret-value-42"  # moto accepts any credentials; this one must never be printed
CREDS = {"aws_access_key_id": "AKIAINFRATEST", "aws_secret_access_key": SECRET}


@pytest.fixture
def s3(moto_endpoint):
    import boto3

    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1", **CREDS)
    client.create_bucket(Bucket=BUCKET)
    return moto_endpoint, client


def listing(client) -> dict[str, int]:
    objects = client.list_objects_v2(Bucket=BUCKET).get("Contents", [])
    return {o["Key"]: o["Size"] for o in objects}


def write(path: str, data: bytes, age_days: float = 0) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)
    if age_days:
        when = time.time() - age_days * 86400
        os.utime(path, (when, when))
        os.utime(os.path.dirname(path), (when, when))


def insert_completed_job(job_id: str) -> None:
    sql(
        "INSERT INTO jobs (id, status, priority, hardware, queue, input_path, output_format,"
        " operations) VALUES (%s, 'completed', 'normal', 'cpu', 'default', 'uploads/x/in.mp4',"
        " 'mp4', '[]'::jsonb)",
        (job_id,),
    )


def test_storage_full_cleans_archives_and_keeps_live_outputs(stack, s3):
    endpoint, client = s3
    root = stack["STORAGE_ROOT"]
    tag = f"infra{os.getpid()}"
    old_tmp = os.path.join(root, "tmp", f"{tag}-old", "part.bin")
    fresh_tmp = os.path.join(root, "tmp", f"{tag}-fresh.part")
    orphan_id, archived_id, recent_id = (str(uuid.uuid4()) for _ in range(3))
    orphan = os.path.join(root, "output", orphan_id, "out.mp4")
    old_output = os.path.join(root, "output", archived_id, "out.mp4")
    recent_output = os.path.join(root, "output", recent_id, "out.webm")
    old_bytes = os.urandom(300_000)
    insert_completed_job(archived_id)
    insert_completed_job(recent_id)
    try:
        write(old_tmp, b"x" * 5000, age_days=3)
        write(fresh_tmp, b"y" * 100)
        write(orphan, b"z" * 7000)
        write(old_output, old_bytes, age_days=62)
        write(recent_output, b"w" * 4000)
        old_sha = hashlib.sha256(old_bytes).hexdigest()
        extra = {
            "storage_tmp_older_than": "24h",
            "storage_archive_bucket": BUCKET,
            "storage_archive_endpoint_url": endpoint,
            "storage_archive_access_key": CREDS["aws_access_key_id"],
            "storage_archive_secret_key": SECRET,
        }

        def snapshot():
            return tree_digest(root), listing(client)

        preview = playbook("storage_full.yml", extra_vars=extra, check=True)
        assert preview.changed >= 1, preview.out[-3000:]
        before_check = snapshot()
        playbook("storage_full.yml", extra_vars=extra, check=True)
        assert snapshot() == before_check, "check mode changed files or the bucket"
        assert listing(client) == {}

        run = playbook("storage_full.yml", extra_vars=extra)
        assert SECRET not in run.out, "the secret key was printed"
        assert not os.path.exists(os.path.dirname(old_tmp)), "old temp entry not removed"
        assert not os.path.exists(os.path.dirname(orphan)), "orphaned output not removed"
        assert os.path.exists(fresh_tmp), "a fresh temp file was removed"
        assert os.path.exists(old_output) and os.path.exists(recent_output), "live output removed"

        key = f"output/{archived_id}/out.mp4"
        assert f"output/{recent_id}/out.webm" not in listing(client), "this month's output archived"
        head = client.head_object(Bucket=BUCKET, Key=key)
        assert head["ContentLength"] == len(old_bytes)
        assert head["Metadata"]["sha256"] == old_sha
        body = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        assert hashlib.sha256(body).hexdigest() == old_sha
        assert_second_run_changes_nothing("storage_full.yml", extra_vars=extra)

        # Free the space: the archived (verified) file goes, this month's output stays.
        extra["storage_remove_archived"] = True
        before_check = snapshot()
        playbook("storage_full.yml", extra_vars=extra, check=True)
        assert snapshot() == before_check
        playbook("storage_full.yml", extra_vars=extra)
        assert not os.path.exists(old_output)
        assert os.path.exists(recent_output)
        assert client.head_object(Bucket=BUCKET, Key=key)["Metadata"]["sha256"] == old_sha
        assert_second_run_changes_nothing("storage_full.yml", extra_vars=extra)
    finally:
        for path in (fresh_tmp, old_output, recent_output, orphan):
            if os.path.exists(path):
                os.unlink(path)
        for job_id in (orphan_id, archived_id, recent_id):
            d = os.path.join(root, "output", job_id)
            if os.path.isdir(d) and not os.listdir(d):
                os.rmdir(d)
        subprocess.run(["rm", "-rf", os.path.dirname(old_tmp)], check=False)
        sql("DELETE FROM jobs WHERE id = ANY(%s::uuid[])", ([archived_id, recent_id],))


def test_remove_archived_needs_a_bucket(stack):
    run = playbook("storage_full.yml", extra_vars={"storage_remove_archived": True}, expect_rc=2)
    assert "storage_remove_archived needs storage_archive_bucket" in run.out
