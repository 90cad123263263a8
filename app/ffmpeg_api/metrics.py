"""Prometheus metrics that stay true across processes and hosts.

- HTTP figures are kept by prometheus_client's multiprocess mode when gunicorn runs several
  workers (PROMETHEUS_MULTIPROC_DIR, set by gunicorn.conf.py), so any worker's /metrics answers
  for all of them.
- Job figures are produced by RQ workers on other hosts, so workers add them to Redis hashes and
  the API exposes those at scrape time. Losing Redis resets them, which Prometheus handles as any
  counter reset.
- Queue depths, workers and jobs by state are read live at scrape time, as is the filesystem
  holding STORAGE_ROOT (the storage alert watches it wherever it is mounted). With the s3
  backend there is no local storage root: the filesystem of this host's scratch directory
  (WORK_DIR), the disk that fills, is what the storage alert watches then
  (`ffmpeg_scratch_filesystem_*{backend="s3"}`; exposed with backend="local" too).
- `ffmpeg_storage_backend_up` says whether the storage answers: with s3 the result of
  `S3Store.probe()` (HEAD the bucket, write, read back, delete), at most one probe per
  mediastore.PROBE_TTL seconds per process and never waited on for longer than PROBE_WAIT; locally
  whether tmp/ under the storage root is a writable directory.
- Labelled counters an alert watches start at zero for every label value, so their series exist
  (and a rate over them is 0, not empty) before the first event.
"""

from __future__ import annotations

import logging
import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)

from . import mediastore

log = logging.getLogger(__name__)

JOB_BUCKETS = (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
JOBS_TOTAL_KEY = "ffmpeg_api:metrics:jobs_total"
DURATION_KEY_PREFIX = "ffmpeg_api:metrics:job_duration:"

HTTP_REQUESTS = Counter(
    "http_requests_total", "HTTP requests answered", ["method", "route", "status"]
)
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
HTTP_DURATION = Histogram(
    "http_request_duration_seconds",
    "Time to answer an HTTP request, from when the load balancer received it "
    "(X-Request-Start) or else from when this process did",
    ["method", "route", "status"],
    buckets=HTTP_BUCKETS,
)
HTTP_QUEUE = Histogram(
    "http_request_queue_seconds",
    "Time requests waited between the load balancer and a free API process",
    buckets=HTTP_BUCKETS,
)
RATE_LIMITED = Counter("rate_limit_exceeded_total", "Requests refused by a rate limit", ["scope"])
RATE_LIMIT_SCOPES = ("key", "global", "ip")
for _scope in RATE_LIMIT_SCOPES:
    RATE_LIMITED.labels(_scope)
KEY_USAGE = Counter("api_key_usage_total", "Authenticated requests per API key id", ["key_id"])


def record_job(redis_conn, operations: list[str], status: str, duration: float | None) -> None:
    """Called by workers when a job reaches a final state."""
    pipe = redis_conn.pipeline(transaction=False)
    for op in sorted(set(operations)):
        pipe.hincrby(JOBS_TOTAL_KEY, f"{op}|{status}", 1)
        if duration is not None and status == "completed":
            key = DURATION_KEY_PREFIX + op
            for le in JOB_BUCKETS:
                if duration <= le:
                    pipe.hincrby(key, f"le:{le}", 1)
            pipe.hincrby(key, "count", 1)
            pipe.hincrbyfloat(key, "sum", duration)
    pipe.execute()


class LiveCollector:
    """Collects figures from Redis and PostgreSQL at scrape time."""

    def __init__(self, settings):
        self.settings = settings

    def collect(self):
        from .redis_conn import get_redis

        conn = get_redis(self.settings.redis_url)
        # Measured at every scrape, by the queries that produce the figures below: 1 when
        # they answered, 0 when they failed (with the same bounded timeouts requests use, so
        # the gauge says 0 when requests get 503 dependency_unavailable).
        up = GaugeMetricFamily(
            "ffmpeg_api_dependency_up",
            "Whether a dependency answered this scrape's queries",
            labels=["dependency"],
        )
        try:
            yield from self._redis_figures(conn)
            up.add_metric(["redis"], 1)
        except Exception:  # a scrape must not fail because one source is down
            log.exception("redis metrics unavailable")
            up.add_metric(["redis"], 0)
        try:
            yield from self._db_figures()
            up.add_metric(["postgresql"], 1)
        except Exception:
            log.exception("database metrics unavailable")
            up.add_metric(["postgresql"], 0)
        yield up
        yield from self._storage_figures()

    def _storage_figures(self):
        backend = self.settings.storage_backend
        up = GaugeMetricFamily(
            "ffmpeg_storage_backend_up",
            "Whether the storage backend answers (s3: a probe of the bucket; local: tmp/ under"
            " the storage root is writable)",
            labels=["backend"],
        )
        up.add_metric([backend], int(mediastore.store_for(self.settings).reachable()))
        yield up
        try:
            st = os.statvfs(self.settings.scratch_dir)
        except OSError:
            log.exception("scratch directory unavailable")
        else:
            size = GaugeMetricFamily(
                "ffmpeg_scratch_filesystem_size_bytes",
                "Size of the filesystem holding this host's scratch directory (WORK_DIR with"
                " the s3 backend, STORAGE_ROOT/tmp otherwise)",
                labels=["backend"],
            )
            size.add_metric([backend], st.f_blocks * st.f_frsize)
            yield size
            avail = GaugeMetricFamily(
                "ffmpeg_scratch_filesystem_avail_bytes",
                "Space the service can still write on the filesystem holding the scratch directory",
                labels=["backend"],
            )
            avail.add_metric([backend], st.f_bavail * st.f_frsize)
            yield avail
        if backend == "s3":
            return  # the media are in the bucket: no local storage root to watch
        try:
            st = os.statvfs(self.settings.storage_root)
        except OSError:
            log.exception("storage root unavailable")
            return
        yield GaugeMetricFamily(
            "ffmpeg_storage_filesystem_size_bytes",
            "Size of the filesystem holding the storage root",
            value=st.f_blocks * st.f_frsize,
        )
        # What an unprivileged writer (the service) can still use, as df's "Avail".
        yield GaugeMetricFamily(
            "ffmpeg_storage_filesystem_avail_bytes",
            "Space the service can still write on the filesystem holding the storage root",
            value=st.f_bavail * st.f_frsize,
        )

    def _redis_figures(self, conn):
        from rq import Worker

        from . import queues

        totals = CounterMetricFamily(
            "ffmpeg_jobs", "Jobs finished, by operation and status", labels=["operation", "status"]
        )
        for field, value in sorted(conn.hgetall(JOBS_TOTAL_KEY).items()):
            op, _, status = field.decode().partition("|")
            totals.add_metric([op, status], int(value))
        yield totals

        hist = HistogramMetricFamily(
            "ffmpeg_job_duration_seconds",
            "Processing time of completed jobs, by operation",
            labels=["operation"],
        )
        for key in sorted(conn.scan_iter(match=DURATION_KEY_PREFIX + "*")):
            op = key.decode().removeprefix(DURATION_KEY_PREFIX)
            data = {k.decode(): float(v) for k, v in conn.hgetall(key).items()}
            buckets = [(str(le), data.get(f"le:{le}", 0.0)) for le in JOB_BUCKETS]
            buckets.append(("+Inf", data.get("count", 0.0)))
            hist.add_metric([op], buckets, data.get("sum", 0.0))
        yield hist

        depth = GaugeMetricFamily(
            "ffmpeg_queue_depth", "Jobs waiting in an RQ queue", labels=["queue"]
        )
        d = queues.depths(conn)
        for name in queues.ALL_QUEUES:
            depth.add_metric([name], d[name])
        yield depth
        yield GaugeMetricFamily(
            "ffmpeg_queue_failed_jobs", "Jobs in RQ failed registries", value=d["failed"]
        )

        workers = GaugeMetricFamily(
            "ffmpeg_workers", "RQ workers alive, by kind and state", labels=["kind", "state"]
        )
        counts = {(k, s): 0 for k in ("cpu", "gpu") for s in ("busy", "idle")}
        for w in Worker.all(connection=conn):
            kind = "gpu" if "gpu" in w.queue_names() else "cpu"
            state = "busy" if w.get_state() == "busy" else "idle"
            counts[(kind, state)] += 1
        for (kind, state), n in counts.items():
            workers.add_metric([kind, state], n)
        yield workers

    def _db_figures(self):
        from . import db
        from .jobs import STATUSES

        states = GaugeMetricFamily(
            "ffmpeg_jobs_in_state", "Jobs currently in each status", labels=["status"]
        )
        with db.transaction(
            self.settings.database_url,
            self.settings.database_pool_size,
            timeout=self.settings.database_pool_timeout,
        ) as c:
            rows = {
                r["status"]: r["n"]
                for r in c.execute("SELECT status, count(*) AS n FROM jobs GROUP BY status")
            }
            oldest = c.execute(
                "SELECT extract(epoch FROM now() - min(created_at)) AS age FROM jobs"
                " WHERE status = 'queued'"
            ).fetchone()["age"]
            conns = c.execute(
                "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database()"
            ).fetchone()["n"]
        for s in STATUSES:
            states.add_metric([s], rows.get(s, 0))
        yield states
        yield GaugeMetricFamily(
            "ffmpeg_oldest_queued_job_age_seconds",
            "Age of the oldest queued job (0 when none)",
            value=float(oldest or 0),
        )
        yield GaugeMetricFamily(
            "ffmpeg_db_connections", "Connections to the service's database", value=conns
        )


def render(settings) -> bytes:
    live = CollectorRegistry()
    live.register(LiveCollector(settings))
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        from prometheus_client import REGISTRY as registry
    return generate_latest(registry) + generate_latest(live)
