"""Storage limits on uploads: a per-user byte quota and a free-space reserve of the root.

A user's stored bytes are their uploads (the `uploads` table) plus the outputs of their
completed jobs that are still on disk (archiving with removal frees them); with the s3
backend, still in the bucket (objects left under output/<job>/). Both limits are enforced
while an upload streams, chunk by chunk, so a chunked upload without Content-Length is cut
off as soon as it crosses one; the quota is checked once more under a per-user lock when the
upload is recorded, so parallel uploads cannot pass it together.

With the s3 backend the free-space reserve does not apply: an upload streams to the bucket
and never lands on a local disk, and a bucket has no free space to keep. The disk that does
fill, a host's scratch directory (WORK_DIR), is watched by the StorageSpaceLow alert and
cleaned by `ffmpeg-api storage cleanup`.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable

import psycopg

from . import mediastore
from .errors import InsufficientStorage, StorageQuotaExceeded
from .settings import Settings


def stored_bytes(conn: psycopg.Connection, settings: Settings, user_id: str) -> int:
    uploads = conn.execute(
        "SELECT coalesce(sum(size), 0) AS n FROM uploads WHERE user_id = %s", (user_id,)
    ).fetchone()
    total = int(uploads["n"] if isinstance(uploads, dict) else uploads[0])
    outputs = conn.execute(
        "SELECT id, output_size FROM jobs"
        " WHERE user_id = %s AND status = 'completed' AND output_size > 0",
        (user_id,),
    )
    rows = [
        (str(row["id"]), int(row["output_size"]))
        if isinstance(row, dict)
        else (str(row[0]), row[1])
        for row in outputs
    ]
    if settings.storage_backend == "s3":
        stored = _stored_in_bucket(conn, settings, [job_id for job_id, _size in rows])
        return total + sum(int(size) for job_id, size in rows if job_id in stored)
    for job_id, size in rows:
        if os.path.isdir(os.path.join(settings.output_dir, job_id)):
            total += int(size)
    return total


def _stored_in_bucket(conn: psycopg.Connection, settings: Settings, job_ids: list[str]) -> set:
    """The job ids among `job_ids` with objects left under output/<job>/ in the bucket (what a
    directory under output/ is locally: archiving with removal and orphan cleanup empty it).

    As cheap as it can be: one delimited listing of output/ (a page names 1,000 jobs) when that
    takes fewer requests than one single-key listing per job of this user, else those."""

    if not job_ids:
        return set()
    store = mediastore.store_for(settings).bucket
    row = conn.execute(
        "SELECT count(*) AS n FROM jobs WHERE status = 'completed' AND output_size > 0"
    ).fetchone()
    pages = -(-int(row["n"] if isinstance(row, dict) else row[0]) // 1000)
    if len(job_ids) <= pages:
        found = set()
        for job_id in job_ids:
            page = store.client.list_objects_v2(
                Bucket=store.bucket, Prefix=store.key(f"output/{job_id}/"), MaxKeys=1
            )
            if page.get("KeyCount", len(page.get("Contents", []))):
                found.add(job_id)
        return found
    prefixes, _loose = store.children("output")
    return set(job_ids) & set(prefixes)


def _quota_error(settings: Settings, stored: int) -> StorageQuotaExceeded:
    return StorageQuotaExceeded(
        f"storage quota exceeded: {stored} of {settings.storage_quota_bytes_per_user} bytes"
        " are already stored; delete outputs or ask an operator for a larger quota"
    )


def _reserve_error(settings: Settings) -> InsufficientStorage:
    return InsufficientStorage(
        "the server is low on storage space; try again later or upload a smaller file"
    )


def _free_after(settings: Settings, more: int) -> int:
    if settings.storage_backend == "s3":
        # An upload streams to the bucket and never lands on a local disk, and a bucket has
        # no free space to keep: the reserve does not apply (the scratch disk is watched by
        # the StorageSpaceLow alert and cleaned by `ffmpeg-api storage cleanup`).
        return sys.maxsize
    return shutil.disk_usage(settings.storage_root).free - more


def upload_budget(
    conn: psycopg.Connection, settings: Settings, user_id: str, declared: int | None
) -> Callable[[int, int], None]:
    """A check for `storage.save_stream`, called before each chunk is written with the upload's
    size so far (that chunk included) and the chunk's length; it raises once a limit is crossed.
    A declared Content-Length over a limit is refused before any byte is read."""
    quota = settings.storage_quota_bytes_per_user
    stored = stored_bytes(conn, settings, user_id) if quota > 0 else 0
    left = quota - stored if quota > 0 else None

    def check(size: int, chunk: int) -> None:
        if left is not None and size > left:
            raise _quota_error(settings, stored)
        if _free_after(settings, chunk) < settings.storage_free_reserve_bytes:
            raise _reserve_error(settings)

    if declared is not None:
        if left is not None and declared > left:
            raise _quota_error(settings, stored)
        if _free_after(settings, declared) < settings.storage_free_reserve_bytes:
            raise _reserve_error(settings)
    return check


def lock_user(conn: psycopg.Connection, user_id: str) -> None:
    """Serialise quota decisions of one user until the end of the current transaction."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('uploads:' || %s, 0))", (user_id,))


def confirm(conn: psycopg.Connection, settings: Settings, user_id: str, size: int) -> None:
    """Refuse a finished upload that parallel ones pushed over the quota (inside lock_user)."""
    quota = settings.storage_quota_bytes_per_user
    if quota <= 0:
        return
    stored = stored_bytes(conn, settings, user_id)
    if stored + size > quota:
        raise _quota_error(settings, stored)


def record_upload(
    conn: psycopg.Connection,
    settings: Settings,
    *,
    user_id: str,
    api_key_id: str | None,
    stored,
    probe: dict | None,
) -> None:
    """Record a finished upload as its user's, within the quota, in one committed step: the
    user's lock, the quota check parallel uploads could have broken, and the ownership row."""
    from . import db, ownership

    with db.atomic(conn):
        lock_user(conn, user_id)
        confirm(conn, settings, user_id, stored.size)
        ownership.record_upload(
            conn,
            path=stored.path,
            user_id=user_id,
            api_key_id=api_key_id,
            size=stored.size,
            sha256=stored.sha256,
            probe=probe,
            version=stored.version,
        )
