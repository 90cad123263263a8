"""Job lifecycle: every rule about job states lives here, once.

A job is a PostgreSQL row first (status `queued`), then an RQ job on the queue for its priority.
Transitions:

    queued -> processing -> completed | failed
    queued | processing -> cancelled
    processing -> queued            (worker lost: requeued, retry_count + 1, bounded)

Every transition is a single conditional UPDATE (`WHERE status = ...`), so two actors racing
(a worker finishing while a cancel arrives, two reapers requeueing) cannot both win.
"""

from __future__ import annotations

import json
import logging
import os
import uuid

import psycopg
import redis
from psycopg.types.json import Jsonb

from . import job_quotas, mediastore, ownership, queues, remote_input
from .errors import Conflict, GpuUnavailable, InputRejected, NotFound, ValidationError
from .keys import Principal
from .media import plan as media_plan
from .media import probe as media_probe
from .media import spec as media_spec
from .settings import Settings

log = logging.getLogger(__name__)

STATUSES = ("queued", "processing", "completed", "failed", "cancelled")
TERMINAL = ("completed", "failed", "cancelled")
PRIORITIES = ("high", "normal", "low")
HARDWARE = ("auto", "cpu", "gpu")
SUBMIT_KEYS = {"input", "output", "operations", "priority", "hardware", "webhook_url"}
CANCEL_PREFIX = "ffmpeg_api:cancel:"
GPU_WORKERS_KEY = "ffmpeg_api:gpu_workers"

PUBLIC_FIELDS = (
    "id",
    "status",
    "priority",
    "hardware",
    "queue",
    "input_path",
    "input_duration",
    "output_format",
    "operations",
    "output_path",
    "outputs",
    "output_size",
    "result",
    "progress",
    "stage",
    "eta_seconds",
    "error",
    "webhook_url",
    "worker_id",
    "encoder",
    "retry_count",
    "created_at",
    "updated_at",
    "started_at",
    "completed_at",
    "api_key_id",
)


def public(row: dict) -> dict:
    out = {k: row.get(k) for k in PUBLIC_FIELDS}
    out["id"] = str(row["id"])
    for k in ("created_at", "updated_at", "started_at", "completed_at"):
        if out[k] is not None:
            out[k] = out[k].isoformat()
    out["progress"] = round(float(row["progress"] or 0), 2)
    return out


def step_timeout(settings: Settings, step: media_plan.Step) -> float:
    """Timeouts scale with the work planned: the step's duration (after trim) weighted by the
    pixels it encodes and decodes per second against 1080p30 (`Step.work`), so a 240p output,
    a trimmed window or a thumbnail does not get what the input's claimed duration would."""
    return settings.job_timeout_base + settings.job_timeout_factor * step.work


def planned_timeout(settings: Settings, steps) -> float:
    """The whole job's time limit: the sum of its steps' limits."""
    return sum(step_timeout(settings, step) for step in steps) or settings.job_timeout_base


def job_timeout(settings: Settings, row: dict) -> float:
    """The time limit RQ enforces on a job row (or a submission spec): the one planned at
    submission; rows planned before it was stored get the old duration-scaled limit."""
    if row.get("timeout_seconds"):
        return float(row["timeout_seconds"])
    per_step = settings.job_timeout_base + settings.job_timeout_factor * float(
        row.get("input_duration") or 0
    )
    return per_step * max(1, len(row.get("operations") or ()))


def parse_uuid(job_id: str) -> str:
    try:
        return str(uuid.UUID(str(job_id)))
    except ValueError:
        raise NotFound(f"no job with id {job_id!r}") from None


# --- submission -------------------------------------------------------------------------


def usable_file(
    conn: psycopg.Connection,
    store,
    requester: ownership.Requester,
    client_path,
    *,
    field: str,
) -> tuple[str, str]:
    """(relative path, version) of a file the requester may read, or a 422 naming `field`.

    A path owned by someone else is answered exactly like a missing one, and before it is
    looked up, so nothing tells a client whether another user's file exists.
    """
    relpath = store.normalize(client_path, field=field)
    version = store.version(relpath) if ownership.may_use(conn, relpath, requester) else None
    if version is None:
        what = field.rsplit(".", 1)[-1]
        raise ValidationError(f"{what} does not name an existing file", field=field)
    return relpath, version


def probe_stored(
    conn: psycopg.Connection, settings: Settings, store, relpath: str, version: str
) -> media_probe.MediaInfo:
    """What ffprobe says about a stored file, probed once per content: the probe recorded for
    its upload when the bytes are still those (same version), else a fresh probe of a local
    copy, recorded for the next submission (an upload on the local backend, first used now;
    one whose file changed; files put in place by hand have no upload row to record it in)."""
    row = conn.execute("SELECT probe, version FROM uploads WHERE path = %s", (relpath,)).fetchone()
    if row and row["probe"] and row["version"] == version:
        return media_probe.info_from_ffprobe(_recorded_probe(row["probe"]))
    with store.local_copy(relpath, os.path.join(settings.scratch_dir, "probe")) as (path, _v):
        probe = media_probe.recorded_probe(
            path, ffprobe_bin=settings.ffprobe_bin, max_pixels=settings.max_input_pixels
        )
    if row:
        # A cache of what the bytes are: kept whether or not this submission goes on.
        conn.execute(
            "UPDATE uploads SET probe = %s, version = %s WHERE path = %s",
            (Jsonb(probe), version, relpath),
        )
    return media_probe.info_from_ffprobe(_recorded_probe(probe), path=path)


def _recorded_probe(probe: dict) -> dict:
    if "error" in probe:
        raise InputRejected(probe["error"])
    return probe["ffprobe"]


def validate_submission(
    payload,
    settings: Settings,
    redis_conn: redis.Redis | None,
    conn: psycopg.Connection,
    principal: Principal | None,
) -> dict:
    """Check a client's request completely before anything is stored or queued."""
    if not isinstance(payload, dict):
        raise ValidationError("the request body must be a JSON object")
    unknown = sorted(set(payload) - SUBMIT_KEYS)
    if unknown:
        raise ValidationError(f"unknown field(s): {', '.join(unknown)}", field=unknown[0])
    if "input" not in payload:
        raise ValidationError("input is required (a path returned by POST /files)", field="input")
    priority = payload.get("priority", "normal")
    if priority not in PRIORITIES:
        raise ValidationError(f"priority must be one of {', '.join(PRIORITIES)}", field="priority")
    hardware = payload.get("hardware", "auto")
    if hardware not in HARDWARE:
        raise ValidationError(f"hardware must be one of {', '.join(HARDWARE)}", field="hardware")
    output_format = payload.get("output", "mp4")
    if not isinstance(output_format, str):
        raise ValidationError("output must be a container name such as mp4", field="output")
    operations = payload.get("operations")
    if not isinstance(operations, list):
        raise ValidationError(
            "operations must be a list of objects with a type", field="operations"
        )
    ops = media_spec.parse_request(
        output_format, operations, max_output_pixels=settings.max_output_pixels
    )

    requester = ownership.Requester.of(principal)
    store = mediastore.store_for(settings)
    info = None
    if remote_input.is_url(payload["input"]):
        # Fetched and probed by the worker (see remote_input): only the URL is judged now.
        remote_input.validate_input_url(payload["input"], settings)
        input_rel, input_version = payload["input"], None
    else:
        input_rel, input_version = usable_file(
            conn, store, requester, payload["input"], field="input"
        )
        info = probe_stored(conn, settings, store, input_rel, input_version)
        media_probe.check_limits(
            info, max_duration=settings.max_input_duration, max_pixels=settings.max_input_pixels
        )

    op_dicts = []
    reference = None
    # Planning needs paths only to write them into ffmpeg's arguments, never to open them.
    plan_dir = os.path.join(settings.scratch_dir, "plan-check")
    for i, op in enumerate(ops):
        d = op.to_dict()
        if d.get("type") == "analyze" and d.get("reference"):
            ref_rel, ref_version = usable_file(
                conn, store, requester, d["reference"], field=f"operations[{i}].reference"
            )
            probe_stored(conn, settings, store, ref_rel, ref_version)
            d["reference"] = ref_rel
            reference = os.path.join(plan_dir, ref_rel)
        op_dicts.append(d)
    # Planning runs nothing, and catches at submission what only the probed input reveals
    # (a trim past the end, thumbnails of an audio file, an output too large for the limits),
    # so those are a 422 now rather than a failed job later. A URL input is planned by the
    # worker once it has the file (`plan_fetched_input`).
    steps = (
        None
        if info is None
        else media_plan.build_plan(
            input_path=os.path.join(plan_dir, input_rel),
            info=info,
            operations=ops,
            output_format=output_format,
            work_dir=plan_dir,
            reference_path=reference,
            max_output_pixels=settings.max_output_pixels,
            max_output_pixel_rate=settings.max_output_pixel_rate,
            max_input_pixels=settings.max_input_pixels,
        )
    )

    if hardware == "gpu" and (redis_conn is None or not gpu_capacity(redis_conn)):
        raise GpuUnavailable(
            "hardware=gpu was requested but no GPU worker with a working NVENC encoder is "
            "running; use hardware=auto or cpu"
        )

    webhook_url = payload.get("webhook_url")
    if webhook_url is not None:
        from .webhooks import validate_url

        validate_url(webhook_url, allow_private=settings.webhook_allow_private)
        if not settings.webhook_secret:
            raise ValidationError(
                "webhooks are disabled: the server has no WEBHOOK_SECRET", field="webhook_url"
            )

    return {
        "priority": priority,
        "hardware": hardware,
        "queue": queues.queue_name(priority, hardware),
        "input_path": input_rel,
        "input_duration": info.duration if info else None,
        "input_info": {"version": input_version, "ffprobe": info.raw} if info else None,
        "output_format": output_format,
        "operations": op_dicts,
        "webhook_url": webhook_url,
        "output_seconds": media_plan.output_seconds(steps) if steps else 0.0,
        "timeout_seconds": (
            planned_timeout(settings, steps) if steps else unplanned_timeout(settings, op_dicts)
        ),
    }


def unplanned_timeout(settings: Settings, operations: list) -> float:
    """RQ's limit for a job whose input is not probed yet (a URL): the fetch, then every
    operation on the longest input allowed. The worker still holds each ffmpeg step to the
    limit of its planned work (`step_timeout`)."""
    per_step = settings.job_timeout_base + settings.job_timeout_factor * (
        settings.max_input_duration
    )
    return settings.input_fetch_timeout + per_step * max(1, len(operations))


def plan_fetched_input(
    conn: psycopg.Connection, settings: Settings, row: dict, info, steps
) -> None:
    """What submission checks on a stored input, applied by the worker to a fetched one:
    the input limits and the user's daily output quota (failing the job with the reason);
    then the row records the input's duration and the planned output-seconds."""
    media_probe.check_limits(
        info, max_duration=settings.max_input_duration, max_pixels=settings.max_input_pixels
    )
    planned = media_plan.output_seconds(steps)
    if row.get("user_id"):
        job_quotas.admit_output(conn, settings, row["user_id"], planned)
    conn.execute(
        "UPDATE jobs SET input_duration = %s, output_seconds = %s WHERE id = %s",
        (info.duration, planned, row["id"]),
    )
    conn.commit()


def gpu_capacity(redis_conn: redis.Redis) -> int:
    """GPU workers alive that proved their encoder opens (each refreshes its entry)."""
    import time

    redis_conn.zremrangebyscore(GPU_WORKERS_KEY, 0, time.time())
    return redis_conn.zcard(GPU_WORKERS_KEY)


def create(
    conn: psycopg.Connection,
    redis_conn: redis.Redis,
    settings: Settings,
    spec: dict,
    principal: Principal | None,
) -> dict:
    """Insert the row and commit, then enqueue. If Redis refuses, the row stays `queued` and
    the next reconcile (run by every worker) puts it on its queue: nothing is lost."""
    job_id = str(uuid.uuid4())
    attempt = 0
    rq_id = queues.rq_job_id(job_id, attempt)
    # The quotas count and the insert share one transaction and the user's advisory lock, so
    # concurrent submissions of one user cannot all see room for the last job.
    with conn.transaction():
        job_quotas.admit(conn, settings, principal, spec["output_seconds"])
        row = _insert(conn, spec, principal, job_id, rq_id)
    conn.commit()
    try:
        queues.enqueue(
            redis_conn,
            queue=spec["queue"],
            job_id=job_id,
            attempt=attempt,
            timeout=job_timeout(settings, spec),
        )
    except redis.RedisError:
        log.exception("job %s stored but not enqueued; reconcile will enqueue it", job_id)
    return row


def _insert(conn, spec: dict, principal: Principal | None, job_id: str, rq_id: str) -> dict:
    return conn.execute(
        "INSERT INTO jobs (id, status, priority, hardware, queue, input_path, input_duration,"
        " output_format, operations, webhook_url, api_key_id, api_key_hash, user_id, rq_job_id,"
        " input_info, output_seconds, timeout_seconds)"
        " VALUES (%s, 'queued', %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " RETURNING *",
        (
            job_id,
            spec["priority"],
            spec["hardware"],
            spec["queue"],
            spec["input_path"],
            spec["input_duration"],
            spec["output_format"],
            Jsonb(spec["operations"]),
            spec["webhook_url"],
            principal.key_id if principal else None,
            principal.key_hash if principal else None,
            principal.user_id if principal else None,
            rq_id,
            Jsonb(spec["input_info"]),
            spec.get("output_seconds"),
            spec.get("timeout_seconds"),
        ),
    ).fetchone()


# --- reading ----------------------------------------------------------------------------


# Everything but the bulky columns (ffmpeg's log tail, the input's ffprobe document), which
# only the endpoints that show them read.
VIEW_COLUMNS = ", ".join((*PUBLIC_FIELDS, "rq_job_id", "user_id", "api_key_hash"))


def get(
    conn: psycopg.Connection,
    job_id: str,
    principal: Principal | None = None,
    *,
    columns: str = VIEW_COLUMNS,
) -> dict:
    job_id = parse_uuid(job_id)
    if principal is None or principal.is_admin:
        row = conn.execute(
            f"SELECT {columns} FROM jobs WHERE id = %s",  # noqa: S608 - fixed column lists
            (job_id,),
        ).fetchone()
    else:
        row = conn.execute(
            f"SELECT {columns} FROM jobs WHERE id = %s AND user_id = %s",  # noqa: S608
            (job_id, principal.user_id),
        ).fetchone()
    if row is None:
        raise NotFound(f"no job with id {job_id}")
    return row


def list_jobs(
    conn: psycopg.Connection,
    principal: Principal | None,
    *,
    status: str | None,
    limit: int,
    offset: int,
) -> tuple[list[dict], int]:
    if status is not None and status not in STATUSES:
        raise ValidationError(f"status must be one of {', '.join(STATUSES)}", field="status")
    if not 1 <= limit <= 200:
        raise ValidationError("limit must be between 1 and 200", field="limit")
    if offset < 0:
        raise ValidationError("offset must be >= 0", field="offset")
    where, params = [], []
    if principal is not None and not principal.is_admin:
        where.append("user_id = %s")
        params.append(principal.user_id)
    if status:
        where.append("status = %s")
        params.append(status)
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    total = conn.execute(f"SELECT count(*) AS n FROM jobs{clause}", params).fetchone()["n"]  # noqa: S608
    rows = conn.execute(
        f"SELECT {VIEW_COLUMNS} FROM jobs{clause}"  # noqa: S608
        " ORDER BY created_at DESC, id LIMIT %s OFFSET %s",
        [*params, limit, offset],
    ).fetchall()
    return rows, total


# --- cancellation -----------------------------------------------------------------------


def cancel(
    conn: psycopg.Connection,
    redis_conn: redis.Redis | None,
    job_id: str,
    principal: Principal | None = None,
    *,
    dry_run: bool = False,
) -> dict:
    row = get(conn, job_id, principal)
    if row["status"] in TERMINAL:
        if row["status"] == "cancelled":
            return {"job": row, "changed": False}
        raise Conflict(f"job {row['id']} is already {row['status']}")
    if dry_run:
        return {"job": row, "changed": True}
    updated = conn.execute(
        "UPDATE jobs SET status = 'cancelled', completed_at = now(), updated_at = now(),"
        " stage = 'cancelled', error = 'cancelled by request', eta_seconds = NULL"
        " WHERE id = %s AND status IN ('queued', 'processing') RETURNING *",
        (row["id"],),
    ).fetchone()
    conn.commit()
    if updated is None:  # finished in between
        return {"job": get(conn, job_id, principal), "changed": False}
    if redis_conn is not None:
        try:
            # The running worker polls this flag twice a second and stops ffmpeg.
            redis_conn.set(CANCEL_PREFIX + str(row["id"]), "1", ex=3600)
            if row["status"] == "queued" and row["rq_job_id"]:
                redis_conn.lrem(f"rq:queue:{row['queue']}", 0, row["rq_job_id"])
        except redis.RedisError:
            log.warning("cancel flag for %s not set; the worker sees the row instead", row["id"])
    return {"job": updated, "changed": True}


# --- recovery ---------------------------------------------------------------------------


def find_stuck(conn: psycopg.Connection, older_than_seconds: float) -> list[dict]:
    """Processing jobs whose worker has not reported for longer than the threshold."""
    return conn.execute(
        "SELECT * FROM jobs WHERE status = 'processing'"
        " AND coalesce(heartbeat_at, started_at, updated_at) < now() - make_interval(secs => %s)"
        " ORDER BY created_at",
        (older_than_seconds,),
    ).fetchall()


def requeue_stuck(
    conn: psycopg.Connection,
    redis_conn: redis.Redis,
    settings: Settings,
    older_than_seconds: float,
    *,
    dry_run: bool = False,
) -> dict:
    """Requeue lost jobs (bounded by JOB_MAX_RETRIES; past it they fail with the reason)."""
    requeued, failed = [], []
    stuck = find_stuck(conn, older_than_seconds)
    conn.rollback()
    for row in stuck:
        if dry_run:
            give_up = row["retry_count"] >= settings.job_max_retries
            (failed if give_up else requeued).append(str(row["id"]))
            continue
        # Comparing the heartbeat makes each update a compare-and-swap: a job that reported
        # in the meantime, or that another reaper already handled, is left alone.
        seen = row["heartbeat_at"] or row["started_at"] or row["updated_at"]
        outcome = _requeue_or_fail(
            conn,
            redis_conn,
            settings,
            row,
            reason=f"worker {row['worker_id']} stopped reporting",
            guard="coalesce(heartbeat_at, started_at, updated_at) = %s",
            guard_params=(seen,),
        )
        if outcome == "requeued":
            requeued.append(str(row["id"]))
        elif outcome == "failed":
            failed.append(str(row["id"]))
    return {
        "changed": bool(requeued or failed),
        "requeued": requeued,
        "failed": failed,
        "dry_run": dry_run,
    }


def release_lost(
    conn: psycopg.Connection,
    redis_conn: redis.Redis,
    settings: Settings,
    job_id: str,
    worker_id: str,
    *,
    reason: str,
) -> str | None:
    """Requeue a job at once when its own worker saw its process die (no need to wait for
    the heartbeat to go stale)."""
    row = conn.execute(
        "SELECT * FROM jobs WHERE id = %s AND status = 'processing' AND worker_id = %s",
        (job_id, worker_id),
    ).fetchone()
    conn.rollback()
    if row is None:
        return None
    return _requeue_or_fail(
        conn,
        redis_conn,
        settings,
        row,
        reason=reason,
        guard="worker_id = %s",
        guard_params=(worker_id,),
    )


def release_worker_jobs(
    conn: psycopg.Connection,
    redis_conn: redis.Redis,
    settings: Settings,
    worker_id: str,
    *,
    reason: str,
) -> dict:
    """Requeue at once every job still marked as held by `worker_id`, whose process is known
    to be gone (a worker restarted under its fixed name finds its predecessor's jobs): no
    need to wait JOB_HEARTBEAT_TIMEOUT for the heartbeat to go stale."""
    rows = conn.execute(
        "SELECT * FROM jobs WHERE status = 'processing' AND worker_id = %s ORDER BY started_at",
        (worker_id,),
    ).fetchall()
    conn.rollback()
    requeued, failed = [], []
    for row in rows:
        outcome = _requeue_or_fail(
            conn,
            redis_conn,
            settings,
            row,
            reason=reason,
            guard="worker_id = %s AND rq_job_id = %s",
            guard_params=(worker_id, row["rq_job_id"]),
        )
        if outcome == "requeued":
            requeued.append(str(row["id"]))
        elif outcome == "failed":
            failed.append(str(row["id"]))
    return {"changed": bool(requeued or failed), "requeued": requeued, "failed": failed}


def _requeue_or_fail(
    conn, redis_conn, settings: Settings, row: dict, *, reason: str, guard: str, guard_params: tuple
) -> str | None:
    if row["retry_count"] >= settings.job_max_retries:
        done = conn.execute(
            "UPDATE jobs SET status = 'failed', completed_at = now(), updated_at = now(),"  # noqa: S608 - guard is one of two fixed clauses
            " stage = 'failed', error = %s"
            f" WHERE id = %s AND status = 'processing' AND {guard} RETURNING id",
            (
                f"lost {row['retry_count'] + 1} times, giving up (JOB_MAX_RETRIES="
                f"{settings.job_max_retries}); last: {reason}",
                row["id"],
                *guard_params,
            ),
        ).fetchone()
        conn.commit()
        return "failed" if done else None
    attempt = row["retry_count"] + 1
    rq_id = queues.rq_job_id(str(row["id"]), attempt)
    done = conn.execute(
        "UPDATE jobs SET status = 'queued', retry_count = %s, rq_job_id = %s,"  # noqa: S608
        " worker_id = NULL, progress = 0, stage = NULL, eta_seconds = NULL,"
        " heartbeat_at = NULL, started_at = NULL, updated_at = now(), error = %s"
        f" WHERE id = %s AND status = 'processing' AND {guard} RETURNING id",
        (attempt, rq_id, f"requeued: {reason}", row["id"], *guard_params),
    ).fetchone()
    conn.commit()
    if done is None:
        return None
    queues.enqueue(
        redis_conn,
        queue=row["queue"],
        job_id=str(row["id"]),
        attempt=attempt,
        timeout=job_timeout(settings, row),
        at_front=True,
    )
    return "requeued"


def reconcile(
    conn: psycopg.Connection,
    redis_conn: redis.Redis,
    settings: Settings,
    *,
    min_age_seconds: float = 0,
    dry_run: bool = False,
) -> dict:
    """Put every queued job that Redis does not know about back on its queue."""
    rows = conn.execute(
        "SELECT id, queue, rq_job_id, retry_count, input_duration, operations, timeout_seconds"
        " FROM jobs"
        " WHERE status = 'queued' AND updated_at < now() - make_interval(secs => %s)"
        " ORDER BY created_at",
        (min_age_seconds,),
    ).fetchall()
    conn.rollback()
    known = {name: queues.known_job_ids(redis_conn, name) for name in {r["queue"] for r in rows}}
    missing = [r for r in rows if not (r["rq_job_id"] and r["rq_job_id"] in known[r["queue"]])]
    if not dry_run:
        for r in missing:
            queues.enqueue(
                redis_conn,
                queue=r["queue"],
                job_id=str(r["id"]),
                attempt=r["retry_count"],
                timeout=job_timeout(settings, r),
            )
            if r["rq_job_id"] != queues.rq_job_id(str(r["id"]), r["retry_count"]):
                conn.execute(
                    "UPDATE jobs SET rq_job_id = %s WHERE id = %s",
                    (queues.rq_job_id(str(r["id"]), r["retry_count"]), r["id"]),
                )
        conn.commit()
    return {
        "changed": bool(missing),
        "checked": len(rows),
        "requeued": [str(r["id"]) for r in missing],
        "dry_run": dry_run,
    }


# --- statistics -------------------------------------------------------------------------


def stats(conn: psycopg.Connection, *, since_hours: float = 24) -> dict:
    by_status = {
        r["status"]: r["n"]
        for r in conn.execute(
            "SELECT status, count(*) AS n FROM jobs"
            " WHERE created_at > now() - make_interval(secs => %s) GROUP BY status",
            (since_hours * 3600,),
        )
    }
    by_operation = conn.execute(
        "SELECT op->>'type' AS operation, count(*) AS count,"
        " count(*) FILTER (WHERE j.status = 'completed') AS completed,"
        " count(*) FILTER (WHERE j.status = 'failed') AS failed,"
        " avg(extract(epoch FROM j.completed_at - j.started_at))"
        "   FILTER (WHERE j.status = 'completed') AS avg_seconds,"
        " percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM"
        "   j.completed_at - j.started_at)) FILTER (WHERE j.status = 'completed') AS p95_seconds"
        " FROM jobs j CROSS JOIN LATERAL jsonb_array_elements(j.operations) AS op"
        " WHERE j.created_at > now() - make_interval(secs => %s)"
        " GROUP BY 1 ORDER BY avg_seconds DESC NULLS LAST",
        (since_hours * 3600,),
    ).fetchall()
    ops = []
    for r in by_operation:
        ops.append(
            {
                "operation": r["operation"],
                "count": r["count"],
                "completed": r["completed"],
                "failed": r["failed"],
                "avg_seconds": round(float(r["avg_seconds"]), 3) if r["avg_seconds"] else None,
                "p95_seconds": round(float(r["p95_seconds"]), 3) if r["p95_seconds"] else None,
            }
        )
    return {
        "since_hours": since_hours,
        "by_status": {s: by_status.get(s, 0) for s in STATUSES},
        "by_operation": ops,
    }


# --- worker-side transitions ------------------------------------------------------------


def claim(conn: psycopg.Connection, job_id: str, rq_id: str, worker_id: str) -> dict | None:
    row = conn.execute(
        "UPDATE jobs SET status = 'processing', worker_id = %s, started_at = now(),"
        " heartbeat_at = now(), updated_at = now(), stage = 'starting', error = NULL"
        " WHERE id = %s AND status = 'queued' AND rq_job_id = %s RETURNING *",
        (worker_id, job_id, rq_id),
    ).fetchone()
    conn.commit()
    return row


def heartbeat(
    conn: psycopg.Connection,
    job_id: str,
    worker_id: str,
    *,
    progress: float,
    stage: str | None,
    eta: float | None,
    logs: str | None = None,
) -> bool:
    """Record progress; False when the job is no longer ours (cancelled or requeued)."""
    row = conn.execute(
        "UPDATE jobs SET progress = %s, stage = %s, eta_seconds = %s, heartbeat_at = now(),"
        " updated_at = now(), logs = coalesce(%s, logs)"
        " WHERE id = %s AND status = 'processing' AND worker_id = %s RETURNING id",
        (round(progress * 100, 2), stage, eta, logs, job_id, worker_id),
    ).fetchone()
    conn.commit()
    return row is not None


def set_encoder(conn: psycopg.Connection, job_id: str, encoder: str) -> None:
    conn.execute("UPDATE jobs SET encoder = %s WHERE id = %s", (encoder, job_id))
    conn.commit()


def complete(
    conn: psycopg.Connection,
    job_id: str,
    worker_id: str,
    *,
    output_path: str | None,
    outputs: list[str],
    output_size: int,
    result: dict | None,
    logs: str,
) -> dict | None:
    row = conn.execute(
        "UPDATE jobs SET status = 'completed', progress = 100, stage = 'completed',"
        " eta_seconds = 0, completed_at = now(), updated_at = now(), output_path = %s,"
        " outputs = %s, output_size = %s, result = %s, logs = %s, error = NULL"
        " WHERE id = %s AND status = 'processing' AND worker_id = %s RETURNING *",
        (
            output_path,
            Jsonb(outputs),
            output_size,
            Jsonb(result) if result else None,
            logs,
            job_id,
            worker_id,
        ),
    ).fetchone()
    conn.commit()
    return row


def fail(
    conn: psycopg.Connection, job_id: str, worker_id: str, *, error: str, logs: str | None
) -> dict | None:
    row = conn.execute(
        "UPDATE jobs SET status = 'failed', completed_at = now(), updated_at = now(),"
        " stage = 'failed', error = %s, logs = coalesce(%s, logs), eta_seconds = NULL"
        " WHERE id = %s AND status = 'processing' AND worker_id = %s RETURNING *",
        (error[:4000], logs, job_id, worker_id),
    ).fetchone()
    conn.commit()
    return row


def operation_types(row: dict) -> list[str]:
    ops = row["operations"]
    if isinstance(ops, str):
        ops = json.loads(ops)
    return [op["type"] for op in ops]
