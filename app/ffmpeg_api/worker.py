"""RQ workers: the task that runs a job, and the worker process that hosts it.

The worker process is RQ's own `Worker` (forking a work horse per job). Beside it runs a
maintenance thread that (a) requeues jobs whose worker was lost, (b) reconciles Redis with
PostgreSQL, (c) for GPU workers, advertises the capacity the API checks before accepting
`hardware=gpu`, (d) registers the worker again when Redis lost its registration, and
(e) removes the work directories of dead attempts. Only one worker in the fleet does (a) and
(b) per interval (a Redis lock); every worker does (c), (d) and (e) on every pass.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import threading
import time

import psycopg
import redis
from rq import Queue, Worker, get_current_job, worker_registration

from . import (
    db,
    housekeeping,
    jobs,
    lifeline,
    mediastore,
    metrics,
    ownership,
    queues,
    remote_input,
    storage,
    webhooks,
)
from .media import gpu as media_gpu
from .media import plan as media_plan
from .media import probe as media_probe
from .media import runner as media_runner
from .redis_conn import get_redis
from .settings import Settings

log = logging.getLogger(__name__)

WORKER_NAME_ENV = "FFMPEG_API_WORKER_NAME"
WORKER_KIND_ENV = "FFMPEG_API_WORKER_KIND"
REAPER_LOCK = "ffmpeg_api:reaper:lock"


class JobRun:
    """State of one job inside a work horse: throttled heartbeats and cancellation checks."""

    def __init__(
        self,
        conn,
        redis_conn,
        settings: Settings,
        job_id: str,
        worker_id: str,
        work_dir: str | None = None,
    ):
        self.conn = conn
        self.redis = redis_conn
        self.settings = settings
        self.job_id = job_id
        self.worker_id = worker_id
        self.work_dir = work_dir
        self.fraction = 0.0
        self.eta: float | None = None
        self.stage = "starting"
        self.logs: str | None = None
        self.last_beat = 0.0
        self.still_ours = True

    def for_users(self, text: str | None) -> str | None:
        """Log or error text as the job's owner may read it: paths relative to the storage
        root (ffmpeg names the work dir and the input by their absolute paths)."""
        extra = (self.work_dir,) if self.work_dir else ()
        scratch = self.settings.scratch_dir
        aliases = {scratch: "tmp"} if scratch != self.settings.tmp_dir else None
        return storage.hide_root(text, self.settings.storage_root, *extra, aliases=aliases)

    def on_progress(self, fraction: float, eta: float | None, stage: str) -> None:
        self.fraction, self.eta, self.stage = fraction, eta, stage
        self.beat()

    def beat(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last_beat < self.settings.job_heartbeat_interval:
            return
        self.last_beat = now
        self.still_ours = jobs.heartbeat(
            self.conn,
            self.job_id,
            self.worker_id,
            progress=self.fraction,
            stage=self.stage,
            eta=self.eta,
            logs=self.logs,
        )

    def should_cancel(self) -> bool:
        # Called twice a second by the runner, even while ffmpeg prints nothing, so the
        # heartbeat never lapses on a live job and a cancel lands within a second.
        self.beat()
        if not self.still_ours:
            return True
        try:
            return bool(self.redis.exists(jobs.CANCEL_PREFIX + self.job_id))
        except redis.RedisError:
            return False


def process_job(job_id: str) -> dict:
    """The RQ task: claim the row, run its plan, publish the outputs atomically."""
    settings = Settings.from_env()
    rq_job = get_current_job()
    rq_id = rq_job.id if rq_job else queues.rq_job_id(job_id, 0)
    worker_id = os.environ.get(WORKER_NAME_ENV) or f"{socket.gethostname()}.{os.getpid()}"
    kind = os.environ.get(WORKER_KIND_ENV, "cpu")
    redis_conn = get_redis(settings.redis_url)
    with db.connect(settings.database_url) as conn:
        row = jobs.claim(conn, job_id, rq_id, worker_id)
        if row is None:
            return {"job_id": job_id, "skipped": "not queued for this attempt"}
        started = time.monotonic()
        work_dir = os.path.join(settings.scratch_dir, f"{job_id}.{row['retry_count']}")
        run = JobRun(conn, redis_conn, settings, job_id, worker_id, work_dir)
        status, error = "failed", None
        try:
            encoder, gpu_encoders = choose_encoder(row["hardware"], kind, settings)
            jobs.set_encoder(conn, job_id, encoder)
            outcome = execute(row, settings, work_dir, run, encoder, gpu_encoders)
            finished = publish(conn, settings, row, work_dir, worker_id, outcome, run)
            status = "completed" if finished else "cancelled"
        except media_runner.Cancelled:
            status = "cancelled"
        except Exception as exc:  # every failure is recorded on the row, with ffmpeg's words
            error = describe(exc)
            stderr = getattr(exc, "stderr_tail", None)
            log.warning("job %s failed: %s", job_id, error)
            error = run.for_users(error)
            logs = run.for_users(stderr) or run.logs
            if jobs.fail(conn, job_id, worker_id, error=error, logs=logs) is None:
                status = "cancelled"
        finally:
            shutil.rmtree(work_dir, ignore_errors=True)
        elapsed = time.monotonic() - started
        final = conn.execute("SELECT * FROM jobs WHERE id = %s", (job_id,)).fetchone()
        conn.rollback()
    try:
        metrics.record_job(
            redis_conn,
            jobs.operation_types(final),
            final["status"],
            elapsed if final["status"] == "completed" else None,
        )
        redis_conn.delete(jobs.CANCEL_PREFIX + job_id)
        if final["status"] in ("completed", "failed"):
            webhooks.schedule(redis_conn, settings, final)
    except redis.RedisError:
        log.exception("job %s finished but its metrics/webhook could not be recorded", job_id)
    return {
        "job_id": job_id,
        "status": final["status"],
        "error": error,
        "seconds": round(elapsed, 3),
        "outcome": status,
    }


def describe(exc: Exception) -> str:
    message = getattr(exc, "message", None) or str(exc) or exc.__class__.__name__
    return f"{exc.__class__.__name__}: {message}"


def choose_encoder(hardware: str, kind: str, settings: Settings) -> tuple[str, tuple[str, ...]]:
    """("cpu" | "gpu", the NVENC encoders proven to open on this worker)."""
    if hardware == "cpu" or kind != "gpu":
        if hardware == "gpu":
            raise RuntimeError("hardware=gpu job reached a CPU worker")
        return "cpu", ()
    probe = media_gpu.probe_gpu(ffmpeg_bin=settings.ffmpeg_bin, device=settings.gpu_device)
    if probe.available:
        return "gpu", tuple(probe.encoders)
    if hardware == "gpu":
        raise RuntimeError(f"no usable GPU encoder on this worker: {probe.reason}")
    return "cpu", ()


def known_input(row: dict, version: str | None, input_path: str):
    """The submission's probe, when the input is provably the bytes that were probed (the
    same version: size and mtime of a local file, the ETag of an object): saves an ffprobe
    run per job. Anything else is probed again."""
    recorded = row.get("input_info")
    if not recorded or version is None:
        return None
    probed = recorded.get("version")
    if probed is None and "mtime_ns" in recorded:  # rows submitted before versions
        probed = f"{recorded.get('size')}:{recorded['mtime_ns']}"
    if probed != version:
        return None
    return media_probe.info_from_ffprobe(recorded["ffprobe"], path=input_path)


def execute(
    row: dict,
    settings: Settings,
    work_dir: str,
    run: JobRun,
    encoder: str,
    gpu_encoders: tuple[str, ...] = (),
):
    shutil.rmtree(work_dir, ignore_errors=True)
    os.makedirs(work_dir)
    store = mediastore.store_for(settings)
    url = row["input_path"] if remote_input.is_url(row["input_path"]) else None
    input_rel = None if url else store.normalize(row["input_path"])
    reference_rel = None
    for op in row["operations"]:
        if op.get("type") == "analyze" and op.get("reference"):
            reference_rel = store.normalize(op["reference"], field="reference")
    # Checked again here, before anything is read, so that a row changed after submission
    # cannot make the job read a file its submitter may not.
    requester = ownership.job_requester(run.conn, row)
    for what, relpath in (("input", input_rel), ("reference", reference_rel)):
        if relpath is not None:
            ownership.require_usable(run.conn, relpath, requester, what)
    # Inputs fetched from a bucket go to <work dir>/.input, removed before the outputs are
    # published; a local store hands out the files themselves.
    fetched = os.path.join(work_dir, ".input")
    with contextlib.ExitStack() as stack:
        run.stage = "fetching input"
        run.beat(force=True)
        if url:
            os.makedirs(fetched, exist_ok=True)
            input_path, version = remote_input.fetch(url, fetched, settings), None
        else:
            input_path, version = stack.enter_context(store.local_copy(input_rel, fetched))
        reference = None
        if reference_rel is not None:
            reference, _ = stack.enter_context(store.local_copy(reference_rel, fetched))
        outcome = transcode(
            row, settings, work_dir, run, encoder, gpu_encoders, input_path, version, reference
        )
    shutil.rmtree(fetched, ignore_errors=True)
    return outcome


def transcode(
    row: dict,
    settings: Settings,
    work_dir: str,
    run: JobRun,
    encoder: str,
    gpu_encoders: tuple[str, ...],
    input_path: str,
    version: str | None,
    reference: str | None,
):
    info = known_input(row, version, input_path) or media_probe.probe(
        input_path, ffprobe_bin=settings.ffprobe_bin, max_pixels=settings.max_input_pixels
    )
    from .media import spec as media_spec

    operations = media_spec.parse_request(
        row["output_format"], row["operations"], max_output_pixels=settings.max_output_pixels
    )
    steps = media_plan.build_plan(
        input_path=input_path,
        info=info,
        operations=operations,
        output_format=row["output_format"],
        work_dir=work_dir,
        encoder=encoder,
        ffmpeg_bin=settings.ffmpeg_bin,
        threads=settings.ffmpeg_threads,
        reference_path=reference,
        gpu_device=settings.gpu_device,
        gpu_encoders=gpu_encoders or None,
        max_output_pixels=settings.max_output_pixels,
        max_output_pixel_rate=settings.max_output_pixel_rate,
        max_input_pixels=settings.max_input_pixels,
    )
    if row.get("input_info") is None:  # a URL input: the checks submission could not make
        jobs.plan_fetched_input(run.conn, settings, row, info, steps)
    outcome = media_runner.run_plan(
        steps,
        on_progress=run.on_progress,
        should_cancel=run.should_cancel,
        timeout=lambda step: jobs.step_timeout(settings, step),
        ffprobe_bin=settings.ffprobe_bin,
    )
    run.logs = run.for_users(outcome.stderr_tail)
    return steps, outcome


def publish(
    conn, settings: Settings, row: dict, work_dir: str, worker_id: str, outcome, run: JobRun
) -> bool:
    """Publish the finished work directory as the job's outputs (all at once: one rename
    locally, a manifest written last in a bucket), then mark the row."""
    steps, result = outcome
    job_id = str(row["id"])
    store = mediastore.store_for(settings)
    run.stage = "publishing outputs"
    run.beat(force=True)
    files = store.publish(job_id, row["retry_count"], work_dir)
    outputs = [relpath for relpath, _size in files]
    primary = media_plan.primary_output(steps)
    primary_path = f"output/{job_id}/{primary}" if primary else (outputs[0] if outputs else None)
    done = jobs.complete(
        conn,
        job_id,
        worker_id,
        output_path=primary_path,
        outputs=outputs,
        output_size=sum(size for _relpath, size in files),
        result=result.result or None,
        logs=run.for_users(result.stderr_tail),
    )
    if done is None:  # cancelled while finishing: the outputs are not wanted
        store.unpublish(job_id)
        return False
    return True


# --- the worker process -----------------------------------------------------------------


class FFmpegWorker(Worker):
    """RQ's worker, plus an immediate requeue when a work horse dies mid-job, and a
    registration that survives Redis losing its data."""

    registration_closed = False  # set once the worker has registered its death

    def register_death(self):
        self.registration_closed = True
        super().register_death()

    def heartbeat(self, timeout=None, pipeline=None):
        super().heartbeat(timeout, pipeline)
        if pipeline is None:  # inside a caller's pipeline nothing can be read back
            self.ensure_registered()

    def ensure_registered(self) -> bool:
        """Register again when Redis has lost this worker's registration (FLUSHALL, a Redis
        restarted without its data); True when it had to.

        RQ registers a worker only at birth; its heartbeat refreshes the hash's TTL (and after
        a flush recreates it with `last_heartbeat` alone) but never re-adds the worker to
        `rq:workers`, which health and the ffmpeg_workers metric count. A worker still taking
        jobs would otherwise look dead (NoWorkers) until it is restarted. This is RQ's own
        birth registration, minus its refusal of an existing key and with the birth date,
        state and current job kept."""
        if self.registration_closed or self.birth_date is None or self.last_heartbeat is None:
            return False  # not born yet (RQ's register_birth is about to run), or shutting down
        key = self.key
        queue_keys = [worker_registration.WORKERS_BY_QUEUE_KEY % q for q in self.queue_names()]
        with self.connection.pipeline(transaction=False) as pipe:
            pipe.sismember(self.redis_workers_keys, key)
            pipe.hexists(key, "birth")
            for queue_key in queue_keys:
                pipe.sismember(queue_key, key)
            if all(pipe.execute()):
                return False
        record = {**self.serialize(), "state": self.get_state()}
        execution = getattr(self, "execution", None)
        if self.get_state() == "busy" and execution is not None:
            record["current_job"] = execution.job_id
        with self.connection.pipeline() as pipe:
            pipe.hset(key, mapping=record)
            worker_registration.register(self, pipe)
            pipe.expire(key, self.worker_ttl + 60)
            pipe.execute()
        log.warning("worker %s: its registration was missing from Redis; registered again", key)
        return True

    def handle_work_horse_killed(self, job, retpid, ret_val, rusage):
        job_id = job.args[0] if job.args else None
        if not job_id or job.func_name != queues.TASK:
            return
        settings = Settings.from_env()
        try:
            with db.connect(settings.database_url) as conn:
                jobs.release_lost(
                    conn,
                    self.connection,
                    settings,
                    job_id,
                    self.name,
                    reason=f"work horse {retpid} died (status {ret_val})",
                )
                remove_dead_attempts(conn, settings)
        except Exception:
            log.exception("could not release job %s after its horse died", job_id)


def remove_dead_attempts(conn, settings: Settings, found: dict | None = None) -> None:
    removed = housekeeping.remove_dead_attempt_dirs(conn, settings, found)
    if removed:
        log.warning("removed the work directories of dead attempts: %s", ", ".join(removed))


def maintenance_loop(
    settings: Settings,
    name: str,
    kind: str,
    stop: threading.Event,
    worker: FFmpegWorker | None = None,
) -> None:
    conn_r = get_redis(settings.redis_url)
    while not stop.is_set():
        try:
            if worker is not None:
                worker.ensure_registered()
            if kind == "gpu":
                conn_r.zadd(
                    jobs.GPU_WORKERS_KEY, {name: time.time() + 3 * settings.orphan_scan_interval}
                )
            if conn_r.set(
                REAPER_LOCK, name, nx=True, ex=max(1, int(settings.orphan_scan_interval))
            ):
                with db.connect(settings.database_url) as conn:
                    found = jobs.requeue_stuck(
                        conn, conn_r, settings, settings.job_heartbeat_timeout
                    )
                    if found["changed"]:
                        log.warning(
                            "lost jobs: requeued %s, failed %s", found["requeued"], found["failed"]
                        )
                    fixed = jobs.reconcile(conn, conn_r, settings, min_age_seconds=30)
                    if fixed["changed"]:
                        log.warning("reconcile requeued %s", fixed["requeued"])
                    if settings.storage_backend == "s3":
                        # The bucket's staging of dead attempts, whichever host they ran on
                        # (one listing of tmp/, by one worker of the fleet per interval).
                        remove_dead_attempts(conn, settings, {})
            # On every worker, not only the lock holder: tmp/ may be local to each host.
            found = housekeeping.attempt_dirs(settings)
            if found:
                with db.connect(settings.database_url) as conn:
                    remove_dead_attempts(conn, settings, found)
        except Exception:
            log.exception("worker maintenance pass failed; retrying next interval")
        stop.wait(settings.orphan_scan_interval)
    if kind == "gpu":
        try:
            conn_r.zrem(jobs.GPU_WORKERS_KEY, name)
        except redis.RedisError:
            pass


def clear_stale_registration(conn_r: redis.Redis, name: str) -> bool:
    """Forget a previous worker of the same name on this host whose process is gone.

    RQ refuses to start a worker whose name is still registered, and a SIGKILLed worker's
    registration outlives it by its TTL; a process manager restarting it under the same
    name would otherwise fail until then. Registrations of live processes, or of other
    hosts, are left alone.
    """
    previous = FFmpegWorker.find_by_key(
        FFmpegWorker.redis_worker_namespace_prefix + name, connection=conn_r
    )
    if previous is None or previous.hostname != socket.gethostname() or not previous.pid:
        return False
    try:
        os.kill(int(previous.pid), 0)
        return False  # still alive: let RQ refuse the duplicate
    except ProcessLookupError:
        pass
    except PermissionError:
        return False
    log.warning("worker %s (pid %s) died without unregistering; clearing it", name, previous.pid)
    previous.register_death()
    return True


def name_in_use(name: str) -> bool:
    """Whether another live process of this host runs as worker `name` (its command line
    says `--name <name>`): a predecessor's work horse that outlived it, or a second worker
    started by hand under the same name. Zombies do not count."""
    me = os.getpid()
    wanted = name.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                args = fh.read().split(b"\0")
            with open(f"/proc/{entry}/stat", "rb") as fh:
                state = fh.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if state in (b"Z", b"X") or b"worker" not in args:
            continue
        if (
            any(
                a == b"--name" and i + 1 < len(args) and args[i + 1] == wanted
                for i, a in enumerate(args)
            )
            or b"--name=" + wanted in args
        ):
            return True
    return False


def release_predecessor_jobs(conn_r: redis.Redis, settings: Settings, name: str) -> dict | None:
    """A worker restarted under its fixed name (supervisor's `<host>.<n>.<kind>`, systemd's
    `%H.%i.<kind>`) requeues the jobs its killed predecessor held, at once rather than after
    JOB_HEARTBEAT_TIMEOUT. Only when no process of this host still runs under that name:
    the predecessor's children die with it (`lifeline`), so a live one means it is not dead.
    """
    if name_in_use(name):
        log.warning("another process runs as worker %s; its jobs are left to it", name)
        return None
    with db.connect(settings.database_url) as conn:
        found = jobs.release_worker_jobs(
            conn, conn_r, settings, name, reason=f"worker {name} restarted; its process had died"
        )
    if found["changed"]:
        log.warning(
            "worker %s: requeued the jobs its dead predecessor held: %s (failed: %s)",
            name,
            ", ".join(found["requeued"]) or "none",
            ", ".join(found["failed"]) or "none",
        )
    return found


def run_worker(
    settings: Settings,
    kind: str,
    *,
    burst: bool = False,
    name: str | None = None,
    worker_ttl: int = 35,
) -> bool:
    if kind == "gpu":
        probe = media_gpu.probe_gpu(ffmpeg_bin=settings.ffmpeg_bin, device=settings.gpu_device)
        if not probe.available:
            raise RuntimeError(
                f"GPU worker cannot start: no NVENC encoder opens on device "
                f"{settings.gpu_device}: {probe.reason}"
            )
    queue_names = queues.GPU_QUEUES if kind == "gpu" else queues.CPU_QUEUES
    name = name or f"{socket.gethostname()}.{os.getpid()}.{kind}"
    os.environ[WORKER_NAME_ENV] = name
    os.environ[WORKER_KIND_ENV] = kind
    mediastore.store_for(settings).prepare()
    # The worker's own client: its blocking dequeue waits up to worker_ttl - 15 s, so its
    # socket timeout must be longer than that on every pooled connection (RQ only raises the
    # timeout for connections made after it starts, and quits on a client-side timeout).
    conn_r = redis.Redis.from_url(
        settings.redis_url, socket_connect_timeout=5, socket_timeout=worker_ttl + 30
    )
    # Every child RQ forks (the work horse, the scheduler) dies with this process, so a
    # SIGKILL leaves nothing running outside the process manager.
    lifeline.arm_every_fork()
    clear_stale_registration(conn_r, name)
    try:
        release_predecessor_jobs(conn_r, settings, name)
    except (psycopg.Error, redis.RedisError):  # the heartbeat reaper catches them later
        log.exception("worker %s: could not release its predecessor's jobs", name)
    worker = FFmpegWorker(
        [Queue(q, connection=conn_r) for q in queue_names],
        connection=conn_r,
        name=name,
        worker_ttl=worker_ttl,
    )
    stop = threading.Event()
    thread = threading.Thread(
        target=maintenance_loop,
        args=(settings, name, kind, stop, worker),
        name="ffmpeg-api-maintenance",
        daemon=True,
    )
    thread.start()
    try:
        return worker.work(with_scheduler=True, burst=burst, logging_level=settings.log_level)
    finally:
        stop.set()
