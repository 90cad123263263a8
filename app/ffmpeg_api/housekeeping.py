"""Storage cleanup rules: which files are garbage, decided against the jobs table.

- tmp/: entries older than a threshold, except the work directories of processing jobs.
- output/<job id>/: orphaned when no job row has that id, or its job failed or was cancelled.
  Outputs of completed jobs are never touched here (archiving them is a separate, explicit step).
- uploads table: with the orphans, records of uploads whose file is gone (removed by hand) are
  dropped, so they stop counting against their user's storage quota.
- tmp/<job>.<attempt>/: the work directory of an attempt that can no longer run (see
  `dead_attempt_dirs`), removed by the workers' maintenance pass without waiting for its age.

With STORAGE_BACKEND=s3 the same rules hold for the bucket (keys under S3_PREFIX mirror the
local layout) and for this host's scratch directory (WORK_DIR, which holds the work
directories then):
- tmp/ objects (outputs staged by an attempt and not yet published) go by the age of their
  top-level entry's newest object, except processing jobs' entries; multipart uploads begun
  before the threshold and without a part since are aborted (a process killed mid-upload
  never aborted them), except those under a processing job's tmp/ entry; scratch entries
  follow the local tmp/ rule.
- output/<job>/ prefixes are orphans by the same job rule; upload records are stale when
  their object is gone from uploads/.
- The staged tmp/<job>.<attempt>/ objects of dead attempts are removed with their directories.
Objects are listed a page (1,000 keys) at a time and deleted in batches of 1,000; a dry run
lists the same way and removes nothing.
"""

from __future__ import annotations

import logging
import os
import re
import time
import uuid

import psycopg

from . import mediastore, storage
from .settings import Settings

log = logging.getLogger(__name__)

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


def orphaned_outputs(conn: psycopg.Connection, names: list[str]) -> set[str]:
    """The entries of output/ (a directory, or a prefix in the bucket) that are garbage: not
    named after a job, or their job is gone, failed or cancelled."""
    ids = [i for i in (_job_id_of(n) for n in names) if i]
    status = {
        str(r["id"]): r["status"]
        for r in conn.execute("SELECT id, status FROM jobs WHERE id = ANY(%s::uuid[])", (ids,))
    }
    return {
        name
        for name in names
        if _job_id_of(name) is None or status.get(_job_id_of(name)) in (None, "failed", "cancelled")
    }


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
        for name in sorted(orphaned_outputs(conn, names)):
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
    if settings.storage_backend == "s3":
        return _cleanup_s3(
            conn, settings, tmp_older_than=tmp_older_than, orphans=orphans, dry_run=dry_run
        )
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
        "backend": "local",
        "removed_tmp": rel["tmp"],
        "removed_scratch": [],
        "aborted_uploads": [],
        "removed_orphans": rel["orphans"],
        "removed_upload_records": records,
        "bytes_freed": freed,
    }


# --- the s3 backend ----------------------------------------------------------------------


def _running_jobs(conn: psycopg.Connection) -> set[str]:
    return {str(r["id"]) for r in conn.execute("SELECT id FROM jobs WHERE status = 'processing'")}


def _last_part_at(store, key: str, upload_id: str) -> float:
    """When a multipart upload last received a part (0 when it has none): its age for the
    tmp/ rule, as a file's newest mtime is locally."""
    newest = 0.0
    paginator = store.client.get_paginator("list_parts")
    for page in paginator.paginate(Bucket=store.bucket, Key=key, UploadId=upload_id):
        for part in page.get("Parts", []):
            newest = max(newest, part["LastModified"].timestamp())
    return newest


def plan_cleanup_s3(
    conn: psycopg.Connection,
    settings: Settings,
    store,
    *,
    tmp_older_than: float | None,
    orphans: bool,
) -> dict:
    """What `cleanup` removes with the s3 backend, each bucket entry with its objects:
    {"tmp": {"tmp/<name>": [(relpath, size)]}, "scratch": [local paths], "multipart":
    [(relpath, upload id)], "orphans": {"output/<name>": [(relpath, size)]},
    "upload_records": [paths]}."""
    plan: dict = {"tmp": {}, "scratch": [], "multipart": [], "orphans": {}, "upload_records": []}
    if tmp_older_than is not None:
        running = _running_jobs(conn)
        cutoff = time.time() - tmp_older_than
        groups: dict[str, list] = {}
        for rel, size, mtime in store.list("tmp"):
            name = rel.split("/", 2)[1]
            if not name:
                continue
            group = groups.setdefault(name, [0.0, []])
            group[0] = max(group[0], mtime)
            group[1].append((rel, size))
        for name, (newest, objects) in sorted(groups.items()):
            if _job_id_of(name) not in running and newest < cutoff:
                plan["tmp"][f"tmp/{name}"] = objects
        scratch = settings.scratch_dir
        names = os.listdir(scratch) if os.path.isdir(scratch) else []
        keep = {name for name in names if _job_id_of(name) in running}
        plan["scratch"] = storage.old_entries(scratch, tmp_older_than, keep)
        for key, upload_id in store.stale_multipart_uploads(tmp_older_than):
            rel = store.relpath(key)
            parts = rel.split("/")
            if parts[0] == "tmp" and len(parts) > 2 and _job_id_of(parts[1]) in running:
                continue
            if _last_part_at(store, key, upload_id) >= cutoff:
                continue  # begun long ago, but still receiving parts (a slow upload)
            plan["multipart"].append((rel, upload_id))
        plan["multipart"].sort()
    if orphans:
        prefixes, loose = store.children("output")
        orphaned = orphaned_outputs(conn, prefixes + loose)
        for name in sorted(orphaned & set(prefixes)):
            objects = [(rel, size) for rel, size, _m in store.list(f"output/{name}")]
            plan["orphans"][f"output/{name}"] = objects
        for name in sorted(loose):
            if name in orphaned:
                head = store.head(f"output/{name}")
                if head is not None:
                    plan["orphans"][f"output/{name}"] = [(f"output/{name}", head["ContentLength"])]
        present = {rel for rel, _size, _m in store.list("uploads")}
        plan["upload_records"] = [
            r["path"]
            for r in conn.execute("SELECT path FROM uploads ORDER BY path")
            if r["path"] not in present
        ]
    conn.rollback()
    return plan


def _cleanup_s3(
    conn: psycopg.Connection,
    settings: Settings,
    *,
    tmp_older_than: float | None,
    orphans: bool,
    dry_run: bool,
) -> dict:
    from botocore.exceptions import ClientError

    store = mediastore.store_for(settings).bucket
    plan = plan_cleanup_s3(conn, settings, store, tmp_older_than=tmp_older_than, orphans=orphans)
    keys = [rel for area in ("tmp", "orphans") for objs in plan[area].values() for rel, _ in objs]
    freed = sum(size for area in ("tmp", "orphans") for o in plan[area].values() for _, size in o)
    records = plan["upload_records"]
    if dry_run:
        freed += sum(_size(p) for p in plan["scratch"])
    else:
        store.delete_keys(keys)
        for path in plan["scratch"]:
            freed += storage.remove(path)
        for rel, upload_id in plan["multipart"]:
            try:
                store.client.abort_multipart_upload(
                    Bucket=store.bucket, Key=store.key(rel), UploadId=upload_id
                )
            except ClientError as exc:  # finished or aborted since it was listed
                if exc.response.get("Error", {}).get("Code") != "NoSuchUpload":
                    raise
        if records:
            conn.execute("DELETE FROM uploads WHERE path = ANY(%s)", (records,))
            conn.commit()
    return {
        "changed": bool(
            plan["tmp"] or plan["scratch"] or plan["multipart"] or plan["orphans"] or records
        ),
        "dry_run": dry_run,
        "backend": "s3",
        "bucket": store.bucket,
        "removed_tmp": sorted(plan["tmp"]),
        "removed_scratch": plan["scratch"],
        "aborted_uploads": [rel for rel, _id in plan["multipart"]],
        "removed_orphans": sorted(plan["orphans"]),
        "removed_upload_records": records,
        "objects_removed": len(keys),
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
    """The work directories in this host's scratch directory (STORAGE_ROOT/tmp, or WORK_DIR
    with the s3 backend), named <job id>.<attempt> as the worker names them, by job id:
    [(attempt, path)]. Anything else there (uploads in progress, plan checks) is not an
    attempt's and is left to the age-based cleanup."""
    found: dict[str, list[tuple[int, str]]] = {}
    try:
        entries = list(os.scandir(settings.scratch_dir))
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
    """Remove `dead_attempt_dirs`; returns them as `tmp/<job>.<attempt>` (relative to the
    storage root; with the s3 backend the same name is the staged prefix in the bucket).

    With the s3 backend the staged `tmp/<job>.<attempt>/` objects of dead attempts go too:
    those of the directories found here and those of any other attempt the bucket holds (an
    attempt on a host that is gone leaves no directory here). A bucket error is logged and
    leaves the local removal done."""
    removed = []
    for path in dead_attempt_dirs(conn, settings, found):
        storage.remove(path)
        if settings.storage_backend == "s3":
            removed.append("tmp/" + os.path.basename(path))
        else:
            removed.append(storage.relative(settings.storage_root, path))
    if settings.storage_backend == "s3":
        try:
            removed += _remove_dead_staged(conn, settings, set(removed))
        except Exception:
            log.exception("could not remove the staged objects of dead attempts")
    return sorted(set(removed))


def _remove_dead_staged(conn: psycopg.Connection, settings: Settings, also: set[str]) -> list[str]:
    store = mediastore.store_for(settings).bucket
    staged: dict[str, list[tuple[int, str]]] = {}
    prefixes, _loose = store.children("tmp")
    for name in prefixes:
        match = ATTEMPT_DIR_RE.match(name)
        if match:
            staged.setdefault(match.group(1), []).append((int(match.group(2)), f"tmp/{name}"))
    dead = set(dead_attempt_dirs(conn, settings, staged)) if staged else set()
    present = {f"tmp/{name}" for name in prefixes}
    for prefix in sorted(dead | (also & present)):
        store.delete_prefix(prefix)
    return sorted(dead)
