"""Storage cleanup rules: which files are garbage, decided against the jobs table.

- tmp/: entries older than a threshold, except the work directories of processing jobs.
- output/<job id>/: orphaned when no job row has that id, or its job failed or was cancelled.
  Outputs of completed jobs are never touched here (archiving them is a separate, explicit step).
- uploads table: with the orphans, records of uploads whose file is gone (removed by hand) are
  dropped, so they stop counting against their user's storage quota.
- tmp/<job>.<attempt>/: the work directory of an attempt that can no longer run (see
  `dead_attempt_dirs`), removed by the workers' maintenance pass without waiting for its age.
"""

from __future__ import annotations

import os
import re
import uuid

import psycopg

from . import storage
from .settings import Settings

ATTEMPT_DIR_RE = re.compile(
    r"^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\.(\d+)$"
)
FINISHED = ("completed", "failed", "cancelled")


def _job_id_of(name: str) -> str | None:
    head = name.split(".", 1)[0]
    try:
        return str(uuid.UUID(head))
    except ValueError:
        return None


def plan_cleanup(
    conn: psycopg.Connection, settings: Settings, *, tmp_older_than: float | None, orphans: bool
) -> dict:
    root = settings.storage_root
    storage.ensure_layout(root)
    tmp_victims: list[str] = []
    orphan_victims: list[str] = []
    if tmp_older_than is not None:
        running = {
            str(r["id"]) for r in conn.execute("SELECT id FROM jobs WHERE status = 'processing'")
        }
        keep = {name for name in os.listdir(settings.tmp_dir) if _job_id_of(name) in running}
        tmp_victims = storage.old_tmp_entries(root, tmp_older_than, keep)
    if orphans:
        names = sorted(os.listdir(settings.output_dir))
        ids = [i for i in (_job_id_of(n) for n in names) if i]
        status = {
            str(r["id"]): r["status"]
            for r in conn.execute("SELECT id, status FROM jobs WHERE id = ANY(%s::uuid[])", (ids,))
        }
        for name in names:
            job_id = _job_id_of(name)
            if job_id is None or status.get(job_id) in (None, "failed", "cancelled"):
                orphan_victims.append(os.path.join(settings.output_dir, name))
    stale_uploads: list[str] = []
    if orphans:
        stale_uploads = [
            r["path"]
            for r in conn.execute("SELECT path FROM uploads ORDER BY path")
            if not os.path.lexists(os.path.join(root, r["path"]))
        ]
    conn.rollback()
    return {"tmp": tmp_victims, "orphans": orphan_victims, "upload_records": stale_uploads}


def cleanup(
    conn: psycopg.Connection,
    settings: Settings,
    *,
    tmp_older_than: float | None,
    orphans: bool,
    dry_run: bool = False,
) -> dict:
    plan = plan_cleanup(conn, settings, tmp_older_than=tmp_older_than, orphans=orphans)
    records = plan.pop("upload_records")
    freed = 0
    rel = {k: [storage.relative(settings.storage_root, p) for p in v] for k, v in plan.items()}
    if dry_run:
        freed = sum(_size(p) for paths in plan.values() for p in paths)
    else:
        for paths in plan.values():
            for path in paths:
                freed += storage.remove(path)
        if records:
            conn.execute("DELETE FROM uploads WHERE path = ANY(%s)", (records,))
            conn.commit()
    return {
        "changed": bool(plan["tmp"] or plan["orphans"] or records),
        "dry_run": dry_run,
        "removed_tmp": rel["tmp"],
        "removed_orphans": rel["orphans"],
        "removed_upload_records": records,
        "bytes_freed": freed,
    }


def _size(path: str) -> int:
    if os.path.isdir(path) and not os.path.islink(path):
        return storage.tree_size(path)[0]
    try:
        return os.lstat(path).st_size
    except FileNotFoundError:
        return 0


def attempt_dirs(settings: Settings) -> dict[str, list[tuple[int, str]]]:
    """The work directories in tmp/ (named <job id>.<attempt>, as the worker names them), by
    job id: [(attempt, path)]. Anything else in tmp/ (uploads in progress, plan checks) is not
    an attempt's and is left to the age-based cleanup."""
    found: dict[str, list[tuple[int, str]]] = {}
    try:
        entries = list(os.scandir(settings.tmp_dir))
    except FileNotFoundError:
        return found
    for entry in entries:
        match = ATTEMPT_DIR_RE.match(entry.name)
        if match and entry.is_dir(follow_symlinks=False):
            found.setdefault(match.group(1), []).append((int(match.group(2)), entry.path))
    return found


def dead_attempt_dirs(
    conn: psycopg.Connection, settings: Settings, found: dict | None = None
) -> list[str]:
    """Work directories of attempts that provably no longer run.

    - The job has moved on to a later attempt: a requeue (worker lost, or its work horse
      died) bumped retry_count, and the superseded attempt cannot claim, heartbeat or publish
      under it any more. This is what a SIGKILLed attempt leaves behind.
    - The directory is the current attempt's but the job finished (completed, failed or
      cancelled) longer than JOB_HEARTBEAT_TIMEOUT ago: a live attempt notices a cancel within
      a second and removes its own directory, so one still there is a dead attempt's (the
      last lost attempt of a job that gave up).

    The current attempt of a queued or processing job is never returned, nor a directory
    whose job has no row (the age-based tmp cleanup decides those)."""
    found = attempt_dirs(settings) if found is None else found
    if not found:
        return []
    rows = conn.execute(
        "SELECT id, status, retry_count,"
        " updated_at < now() - make_interval(secs => %s) AS settled"
        " FROM jobs WHERE id = ANY(%s::uuid[])",
        (settings.job_heartbeat_timeout, list(found)),
    ).fetchall()
    conn.rollback()
    dead = []
    for row in rows:
        for attempt, path in found.get(str(row["id"]), ()):
            superseded = attempt < row["retry_count"]
            finished = row["status"] in FINISHED and row["settled"]
            if superseded or (attempt == row["retry_count"] and finished):
                dead.append(path)
    return sorted(dead)


def remove_dead_attempt_dirs(
    conn: psycopg.Connection, settings: Settings, found: dict | None = None
) -> list[str]:
    """Remove `dead_attempt_dirs`; returns them relative to the storage root."""
    removed = []
    for path in dead_attempt_dirs(conn, settings, found):
        storage.remove(path)
        removed.append(storage.relative(settings.storage_root, path))
    return removed
