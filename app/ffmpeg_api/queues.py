"""Which RQ queue a job goes to, and how it is put there.

Queue names are part of the deployment contract: CPU workers listen on `high`, `default`,
`low` in that order; GPU workers on `gpu`.
"""

from __future__ import annotations

import redis
from rq import Queue
from rq.registry import FailedJobRegistry, StartedJobRegistry

CPU_QUEUES = ("high", "default", "low")
GPU_QUEUES = ("gpu",)
ALL_QUEUES = CPU_QUEUES + GPU_QUEUES
QUEUE_FOR_PRIORITY = {"high": "high", "normal": "default", "low": "low"}
TASK = "ffmpeg_api.worker.process_job"
WEBHOOK_TASK = "ffmpeg_api.webhooks.deliver"


def queue_name(priority: str, hardware: str) -> str:
    if hardware == "gpu":
        return "gpu"
    return QUEUE_FOR_PRIORITY[priority]


def rq_job_id(job_id: str, attempt: int) -> str:
    # One RQ job per attempt, so a requeue never collides with the registries of a lost one.
    return f"{job_id}_{attempt}"


def enqueue(
    conn: redis.Redis,
    *,
    queue: str,
    job_id: str,
    attempt: int,
    timeout: float,
    at_front: bool = False,
) -> str:
    rq_id = rq_job_id(job_id, attempt)
    Queue(queue, connection=conn).enqueue(
        TASK,
        job_id,
        job_id=rq_id,
        # RQ's own timeout is a backstop; the worker enforces per-step timeouts itself.
        job_timeout=int(timeout) + 60,
        result_ttl=3600,
        failure_ttl=7 * 86400,
        at_front=at_front,
        description=f"ffmpeg job {job_id}",
    )
    return rq_id


def known_job_ids(conn: redis.Redis, queue: str) -> set[str]:
    """RQ job ids waiting in a queue, scheduled for it, or running on a worker: read once, so
    reconciling many jobs costs one pass over each queue rather than one per job."""
    from rq.registry import ScheduledJobRegistry

    q = Queue(queue, connection=conn)
    ids = {i.decode() for i in conn.lrange(q.key, 0, -1)}
    ids.update(StartedJobRegistry(queue=q).get_job_ids())
    ids.update(ScheduledJobRegistry(queue=q).get_job_ids())
    return ids


def depths(conn: redis.Redis) -> dict:
    result = {}
    failed = 0
    for name in ALL_QUEUES:
        q = Queue(name, connection=conn)
        result[name] = q.count
        failed += FailedJobRegistry(queue=q).count
    result["failed"] = failed
    return result
