"""Health: a deep check of every component, a shallow one for the load balancer, metrics."""

from __future__ import annotations

import functools
import hmac
import subprocess
import time

from flask import Blueprint, Response, jsonify, request

from .. import control, queues, storage
from .. import db as dbmod
from ..errors import Unauthorized
from ..metrics import render
from ..redis_conn import get_redis
from .pipeline import public, settings

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
        usage = storage.disk_usage(s.storage_root)
        status = "ok"
        if not usage["writable"] or usage["free_percent"] < 2:
            status = "error"
        elif usage["free_percent"] < 10:
            status = "warning"
        return {
            "status": status,
            "free_bytes": usage["free_bytes"],
            "free_percent": usage["free_percent"],
            "writable": usage["writable"],
        }

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
    critical = ("database", "redis", "storage", "ffmpeg")
    if any(components[c]["status"] == "error" for c in critical):
        status = "unhealthy"
    elif any(c["status"] != "ok" for c in components.values()):
        status = "degraded"
    else:
        status = "healthy"
    return {"status": status, "components": components}


@bp.get("/health")
@public
def health():
    report = check_all(settings())
    response = jsonify(report)
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
    if s.metrics_token:
        presented = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(presented.encode(), s.metrics_token.encode()):
            raise Unauthorized("metrics need the bearer token")
    return Response(render(s), mimetype="text/plain; version=0.0.4; charset=utf-8")
