"""Storage limits on uploads: a per-user byte quota and a free-space reserve of the root.

A user's stored bytes are their uploads (the `uploads` table) plus the outputs of their
completed jobs that are still on disk (archiving with removal frees them). Both limits are
enforced while an upload streams, chunk by chunk, so a chunked upload without Content-Length
is cut off as soon as it crosses one; the quota is checked once more under a per-user lock when
the upload is recorded, so parallel uploads cannot pass it together.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable

import psycopg

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
    for row in outputs:
        job_id, size = (row["id"], row["output_size"]) if isinstance(row, dict) else row
        if os.path.isdir(os.path.join(settings.output_dir, str(job_id))):
            total += int(size)
    return total


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
