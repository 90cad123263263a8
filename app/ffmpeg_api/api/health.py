"""Health: a deep check of every component, a shallow one for the load balancer, metrics.

Anyone may read whether the service is healthy; which components are not, and the figures
behind it, only callers with METRICS_TOKEN or an API key (see `may_see_details`)."""

from __future__ import annotations

import functools
import hmac
import subprocess
import time

from flask import Blueprint, Response, jsonify, request

from .. import control, keys, mediastore, queues
from .. import db as dbmod
from ..errors import Unauthorized
from ..metrics import render
from ..redis_conn import get_redis
from .pipeline import presented_key, public, settings

bp = Blueprint("health", __name__)


@functools.lru_cache(maxsize=4)
def ffmpeg_version(binary: str) -> str:
    out = subprocess.run(
        [binary, "-hide_banner", "-version"], capture_output=True, text=True, timeout=10, check=True
    ).stdout
    return out.splitlines()[0].split(" Copyright")[0].removeprefix("ffmpeg version ").strip()


def _timed(check):
    started = time.perf_counter()
    try:
        result = check()
        result.setdefault("status", "ok")
    except Exception as exc:  # the health check reports failures, it does not raise them
        result = {"status": "error", "error": f"{exc.__class__.__name__}: {exc}"}
    result["ms"] = round((time.perf_counter() - started) * 1000, 2)
    return result


def check_all(s) -> dict:
    redis_conn = get_redis(s.redis_url)

    def database():
        with dbmod.transaction(s.database_url, s.database_pool_size, timeout=3) as conn:
            conn.execute("SELECT 1").fetchone()
        return {}

    def redis_check():
        redis_conn.ping()
        return {}

    def queue_check():
        return {"depths": queues.depths(redis_conn)}

    def worker_check():
        from rq import Worker

        kinds = {k: {"alive": 0, "busy": 0} for k in ("cpu", "gpu")}
        for w in Worker.all(connection=redis_conn):
            kind = "gpu" if "gpu" in w.queue_names() else "cpu"
            kinds[kind]["alive"] += 1
            if w.get_state() == "busy":
                kinds[kind]["busy"] += 1
        status = "ok" if kinds["cpu"]["alive"] + kinds["gpu"]["alive"] else "warning"
        return {"status": status, **kinds}

    def storage_check():
        # The local root's free space, or the bucket (HEAD plus a write/read/delete probe,
        # cached a few seconds) and this host's scratch: mediastore decides the status.
        return mediastore.store_for(s).health()

    def ffmpeg_check():
        return {"version": ffmpeg_version(s.ffmpeg_bin)}

    def maintenance_check():
        m = control.maintenance_status(redis_conn)
        return {"status": "warning" if m["enabled"] else "ok", **m}

    components = {
        "database": _timed(database),
        "redis": _timed(redis_check),
        "queues": _timed(queue_check),
        "workers": _timed(worker_check),
        "storage": _timed(storage_check),
        "ffmpeg": _timed(ffmpeg_check),
        "maintenance": _timed(maintenance_check),
    }
    return {"status": verdict(components), "components": components}


# A component in error that stops the service. `http` is the admin CLI's timing of the API as a
# client sees it (`ffmpeg-api health --url`), present only when asked for.
CRITICAL = ("database", "redis", "storage", "ffmpeg", "http")


def verdict(components: dict) -> str:
    """The one health verdict (GET /health, `ffmpeg-api health`, the service_health module):
    unhealthy when a critical component is in error, degraded when anything else is not ok
    (maintenance on, no worker alive, a backlog), else healthy."""
    if any(components.get(c, {}).get("status") == "error" for c in CRITICAL):
        return "unhealthy"
    if any(c.get("status") != "ok" for c in components.values()):
        return "degraded"
    return "healthy"


def check_deep(s) -> dict:
    """What the deep check adds: database connections by state, and per worker its state and
    the jobs the database says it is processing (a worker that died mid-job shows up here with
    jobs but without a live registration)."""
    redis_conn = get_redis(s.redis_url)

    def connections():
        with dbmod.transaction(s.database_url, s.database_pool_size, timeout=3) as conn:
            rows = conn.execute(
                "SELECT coalesce(state, 'background') AS state, count(*) AS n"
                " FROM pg_stat_activity WHERE datname = current_database() GROUP BY 1"
            ).fetchall()
            limit = conn.execute("SHOW max_connections").fetchone()
        by_state = {r["state"]: r["n"] for r in rows}
        total = sum(by_state.values())
        max_connections = int(next(iter(limit.values())))
        status = "warning" if total > 0.8 * max_connections else "ok"
        return {
            "status": status,
            "by_state": by_state,
            "total": total,
            "max_connections": max_connections,
        }

    def worker_detail():
        from rq import Worker

        with dbmod.transaction(s.database_url, s.database_pool_size, timeout=3) as conn:
            active = {
                r["worker_id"]: r["n"]
                for r in conn.execute(
                    "SELECT worker_id, count(*) AS n FROM jobs WHERE status = 'processing'"
                    " GROUP BY worker_id"
                )
            }
        workers = []
        for w in sorted(Worker.all(connection=redis_conn), key=lambda w: w.name):
            workers.append(
                {
                    "name": w.name,
                    "state": w.get_state(),
                    "queues": w.queue_names(),
                    "processing_jobs": active.pop(w.name, 0),
                }
            )
        # Jobs held by workers that are not registered any more: lost, waiting for a reaper.
        orphaned = {str(k): v for k, v in active.items()}
        status = "warning" if orphaned else "ok"
        return {"status": status, "workers": workers, "jobs_of_missing_workers": orphaned}

    return {"connections": _timed(connections), "worker_jobs": _timed(worker_detail)}


def summarize(report: dict) -> list[dict]:
    """One short phrase per component that is not ok ({component, message}), e.g. 'database
    error (connection refused)' or 'workers: 0 alive' -- what an engineer reads first."""
    problems = []
    for name, comp in report.get("components", {}).items():
        message = _problem(name, comp)
        if message:
            problems.append({"component": name, "message": message})
    return problems


def _problem(name: str, comp: dict) -> str | None:
    status = comp.get("status", "ok")
    if name == "workers" and status != "error":
        alive = comp.get("cpu", {}).get("alive", 0) + comp.get("gpu", {}).get("alive", 0)
        return "workers: 0 alive" if alive == 0 else None
    if status == "ok":
        return None
    if status == "error":
        detail = comp.get("error", "")
        return f"{name} error ({detail})" if detail else f"{name} error"
    if name == "maintenance":
        return f"maintenance mode on ({comp.get('reason') or 'no reason given'})"
    if name == "storage":
        return f"storage {comp.get('free_percent')}% free"
    if name == "connections":
        return f"database connections {comp.get('total')}/{comp.get('max_connections')}"
    if name == "worker_jobs":
        lost = comp.get("jobs_of_missing_workers", {})
        return (
            f"{sum(lost.values())} processing job(s) held by missing worker(s) "
            f"{', '.join(sorted(lost))}"
        )
    return f"{name} {status}"


def metrics_token_presented(s) -> bool:
    """Whether the request carries METRICS_TOKEN as `Authorization: Bearer` (never true when
    no token is configured)."""
    if not s.metrics_token:
        return False
    presented = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    return hmac.compare_digest(presented.encode(), s.metrics_token.encode())


def may_see_details(s) -> bool:
    """The health report's components (workers, queues, storage, versions) are for operators:
    callers presenting METRICS_TOKEN or a valid API key. An invalid key gets the bare status,
    not a 401, so a probe with a stale key still reads up or down. The key is checked on a
    short timeout: with the database down, only the token (or the admin CLI) sees details."""
    if metrics_token_presented(s):
        return True
    raw = presented_key()
    if not raw or not keys.KEY_RE.match(raw):
        return False
    try:
        with dbmod.transaction(s.database_url, s.database_pool_size, timeout=3) as conn:
            keys.authenticate(conn, raw)
    except Exception:  # invalid key or no database: the caller gets the public answer
        return False
    return True


@bp.get("/health")
@public
def health():
    s = settings()
    report = check_all(s)
    body = report if may_see_details(s) else {"status": report["status"]}
    response = jsonify(body)
    response.status_code = 503 if report["status"] == "unhealthy" else 200
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/health/live")
@public
def live():
    """Answers from the process alone: the load balancer must not eject every host because
    a shared dependency blinked."""
    return jsonify({"status": "alive"})


@bp.get("/metrics")
@public
def metrics():
    s = settings()
    if s.metrics_token and not metrics_token_presented(s):
        raise Unauthorized("metrics need the bearer token")
    return Response(render(s), mimetype="text/plain; version=0.0.4; charset=utf-8")
