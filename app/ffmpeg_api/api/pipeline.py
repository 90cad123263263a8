"""What happens around every request: identity, limits, maintenance, errors, logs, metrics.

Each view declares who may call it with `@public`, `@authenticated` or `@admin_only`; the
`before_request` hook below enforces it, so no view can forget a check.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import sys
import time
import uuid

import psycopg
import redis.exceptions
from flask import Flask, g, jsonify, request
from werkzeug.exceptions import HTTPException

from .. import control, keys, ratelimit, storage
from .. import db as dbmod
from ..errors import (
    ApiError,
    DependencyUnavailable,
    Forbidden,
    JsonTooDeep,
    JsonTooLarge,
    RateLimited,
    Unavailable,
    ValidationError,
    unavailable_dependency,
)
from ..metrics import HTTP_DURATION, HTTP_QUEUE, HTTP_REQUESTS, KEY_USAGE, RATE_LIMITED
from ..redis_conn import get_redis

log = logging.getLogger(__name__)
access_log = logging.getLogger("ffmpeg_api.access")

AUTH_ATTR = "_ffmpeg_api_auth"


def _mark(level: str, *, maintenance_exempt: bool = False):
    def decorator(view):
        setattr(view, AUTH_ATTR, level)
        view._maintenance_exempt = maintenance_exempt
        return view

    return decorator


public = _mark("public", maintenance_exempt=True)
authenticated = _mark("key")
admin_only = _mark("admin")
admin_during_maintenance = _mark("admin", maintenance_exempt=True)


def settings():
    from flask import current_app

    return current_app.config["SETTINGS"]


def db():
    """This request's connection (taken from the process pool on first use)."""
    if "db_conn" not in g:
        s = settings()
        pool = dbmod.get_pool(s.database_url, s.database_pool_size)
        g.db_pool = pool
        # Bounded: while PostgreSQL is down the pool has nothing to lend, and a request that
        # waited longer would only turn an outage into a slow answer (PoolTimeout is a 503).
        g.db_conn = pool.getconn(timeout=s.database_pool_timeout)
    return g.db_conn


def redis_conn():
    return get_redis(settings().redis_url)


def client_ip(remote_addr: str | None, forwarded_for: str | None, trusted) -> str:
    """The client's address: X-Forwarded-For is believed only from a trusted proxy, and then
    read from the right, skipping further trusted proxies."""
    peer = remote_addr or "0.0.0.0"  # noqa: S104 - a placeholder address, never bound
    if not forwarded_for or not _in(peer, trusted):
        return peer
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return peer
        if not _in(hop, trusted):
            return hop
    return hops[0] if hops else peer


# A queue time beyond this is a clock problem between proxy and API host, not a queue (the
# load balancer gives up on a queued request long before: timeout queue).
MAX_QUEUE_SECONDS = 300.0


def queue_seconds(header: str | None, now: float) -> float:
    """Time the request waited between the load balancer and this process, from the proxy's
    `X-Request-Start: t=<epoch ms>` (HAProxy sets it; seconds or microseconds are accepted
    too, as other proxies send them). 0 for a missing, malformed or future timestamp; clock
    skew beyond MAX_QUEUE_SECONDS also counts as 0 rather than as an outage."""
    if not header:
        return 0.0
    value = header.strip()
    if value.startswith("t="):
        value = value[2:]
    try:
        stamp = float(value)
    except ValueError:
        return 0.0
    if stamp > 1e14:  # microseconds
        stamp /= 1e6
    elif stamp > 1e11:  # milliseconds
        stamp /= 1e3
    waited = now - stamp
    if waited <= 0 or waited > MAX_QUEUE_SECONDS:
        return 0.0
    return waited


def _in(addr: str, networks) -> bool:
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def presented_key() -> str | None:
    key = request.headers.get("X-API-Key")
    if key:
        return key.strip()
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return None


def init_app(app: Flask, s) -> None:
    trusted = s.trusted_networks()
    _configure_access_log(s.access_log)

    @app.before_request
    def before():
        g.started = time.perf_counter()
        # Latency as the client sees it: a request that waited for a free API process (all
        # busy: the API is saturated) waited in HAProxy or in gunicorn's accept queue, which
        # this process cannot time itself. The proxy's timestamp covers that wait.
        g.queued = (
            queue_seconds(request.headers.get("X-Request-Start"), time.time())
            if _in(request.remote_addr or "", trusted)
            else 0.0
        )
        g.started -= g.queued
        g.request_id = request.headers.get("X-Request-ID", "")[:64] or uuid.uuid4().hex
        g.client_ip = client_ip(
            request.remote_addr, request.headers.get("X-Forwarded-For"), trusted
        )
        g.principal = None
        view = app.view_functions.get(request.endpoint) if request.endpoint else None
        level = getattr(view, AUTH_ATTR, "public") if view else "public"
        if level == "public":
            return None
        raw = presented_key()
        key_hash = keys.hash_key(raw) if raw and keys.KEY_RE.match(raw) else None
        admitted = _admission(
            s, exempt=getattr(view, "_maintenance_exempt", False), key_hash=key_hash
        )
        g.principal = _principal(raw, key_hash, admitted["epoch"])
        KEY_USAGE.labels(g.principal.key_id).inc()
        if level == "admin" and not g.principal.is_admin:
            raise Forbidden("this endpoint needs an admin key")
        limit = (
            g.principal.rate_limit
            if g.principal.rate_limit is not None
            else s.rate_limit_per_minute
        )
        verdict = ratelimit.verdict("key", admitted["key_count"], limit, admitted["retry_after"])
        if not verdict.allowed:
            _refuse(verdict)
        if admitted["flush_due"]:
            _flush_usage()
        return None

    @app.after_request
    def after(response):
        response.headers["X-Request-ID"] = g.get("request_id", "")
        _observe(response.status_code, response.calculate_content_length())
        return response

    @app.teardown_request
    def release(_exc):
        conn = g.pop("db_conn", None)
        if conn is not None:
            g.db_pool.putconn(conn)  # the pool rolls back anything left open

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError):
        body = exc.to_dict()
        # A probe or storage error names files by their server paths; clients name them
        # relative to the storage root.
        body["error"]["message"] = storage.hide_root(body["error"]["message"], s.storage_root)
        response = jsonify({**body, "request_id": g.get("request_id")})
        response.status_code = exc.status
        for k, v in exc.headers.items():
            response.headers[k] = v
        return response

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        code = {
            400: "bad_request",
            404: "not_found",
            405: "method_not_allowed",
            413: "payload_too_large",
        }.get(exc.code or 500, "http_error")
        message = exc.description or exc.name
        if exc.code == 413:
            message = f"request body exceeds the limit of {s.max_upload_bytes} bytes"
        response = jsonify(
            {"error": {"code": code, "message": message}, "request_id": g.get("request_id")}
        )
        response.status_code = exc.code or 500
        return response

    # PoolTimeout is an OperationalError; redis' ConnectionError and TimeoutError are not.
    @app.errorhandler(psycopg.OperationalError)
    @app.errorhandler(redis.exceptions.ConnectionError)
    @app.errorhandler(redis.exceptions.TimeoutError)
    def dependency_error(exc: Exception):
        dependency = unavailable_dependency(exc)
        if dependency is None:  # a working server's answer (deadlock, statement timeout)
            return unexpected(exc)
        log.warning(
            "%s unavailable in %s %s: %s: %s",
            dependency,
            request.method,
            request.path,
            exc.__class__.__name__,
            str(exc).strip().splitlines()[0] if str(exc).strip() else "",
        )
        return api_error(DependencyUnavailable(dependency))

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unhandled error in %s %s", request.method, request.path)
        response = jsonify(
            {
                "error": {
                    "code": "internal_error",
                    "message": "internal error; quote the request_id",
                },
                "request_id": g.get("request_id"),
            }
        )
        response.status_code = 500
        return response


# Everything a request needs from Redis, in one server-side script (one round trip, one
# command to encode and parse): switches, counters, the key epoch and usage.
ADMISSION_LUA = """
local maint = redis.call('GET', KEYS[1])
local ttl = redis.call('TTL', KEYS[1])
local glimit = redis.call('GET', KEYS[2])
local ddos = redis.call('GET', KEYS[3])
redis.call('SET', KEYS[4], ARGV[1], 'NX')
local epoch = redis.call('GET', KEYS[4])
local flush = redis.call('SET', KEYS[5], '1', 'NX', 'EX', ARGV[2])
local gcount = redis.call('INCR', KEYS[6])
redis.call('EXPIRE', KEYS[6], ARGV[3])
local ipcount = redis.call('INCR', KEYS[7])
redis.call('EXPIRE', KEYS[7], ARGV[3])
local kcount = 0
if ARGV[4] ~= '' then
  kcount = redis.call('INCR', KEYS[8])
  redis.call('EXPIRE', KEYS[8], ARGV[3])
  redis.call('HINCRBY', KEYS[9], ARGV[4], 1)
  redis.call('HSET', KEYS[10], ARGV[4], ARGV[5])
end
return {maint or false, ttl, glimit or false, ddos or false, epoch, flush and 1 or 0,
        gcount, ipcount, kcount}
"""
_admission_script = None


def _admission(s, *, exempt: bool, key_hash: str | None) -> dict:
    """Maintenance mode, every rate-limit counter and the key's usage: one Redis round trip.

    The per-key bucket and usage are keyed by the presented key's hash, so they can be counted
    before the key is verified: a forged key only ever counts against its own hash. The key
    epoch is random and created if missing: after Redis loses its data the new epoch can never
    equal one a cached principal was stored under.
    """
    global _admission_script
    conn = redis_conn()
    if _admission_script is None or _admission_script.registered_client is not conn:
        _admission_script = conn.register_script(ADMISSION_LUA)
    window, retry_after = ratelimit.window_now()
    prefix = ratelimit.PREFIX
    result = _admission_script(
        keys=[
            control.MAINTENANCE_KEY,
            control.GLOBAL_LIMIT_KEY,
            control.DDOS_KEY,
            keys.EPOCH_KEY,
            keys.USAGE_FLUSH_LOCK,
            f"{prefix}global:all:{window}",
            f"{prefix}ip:{g.client_ip}:{window}",
            f"{prefix}key:{key_hash}:{window}",
            keys.USAGE_COUNT_KEY,
            keys.USAGE_LAST_KEY,
        ],
        args=[
            uuid.uuid4().hex,
            USAGE_FLUSH_SECONDS,
            ratelimit.WINDOW * 2,
            key_hash or "",
            f"{time.time():.3f}",
        ],
    )
    maint, ttl, global_limit, ddos, epoch, flush_due, global_count, ip_count, key_count = result
    if maint and not exempt:
        wait = ttl if ttl and ttl > 0 else 60
        raise Unavailable(
            "the service is in maintenance mode; retry later",
            headers={"Retry-After": str(min(wait, 3600))},
        )
    limit = int(global_limit) if global_limit else s.global_rate_limit_per_minute
    verdict = ratelimit.verdict("global", global_count, limit, retry_after)
    if not verdict.allowed:
        _refuse(verdict)
    if ddos:
        verdict = ratelimit.verdict("ip", ip_count, s.ddos_ip_rate_limit_per_minute, retry_after)
        if not verdict.allowed:
            _refuse(verdict)
    return {
        "epoch": epoch,
        "flush_due": bool(flush_due),
        "key_count": key_count,
        "retry_after": retry_after,
    }


USAGE_FLUSH_SECONDS = 5
PRINCIPAL_TTL = 60.0
_principals: dict[str, tuple[bytes, float, keys.Principal]] = {}


def _principal(raw: str | None, key_hash: str | None, epoch: bytes) -> keys.Principal:
    """Verified principals are cached per process until any key changes (the epoch moves) or
    a minute passes, so a steady client costs no database round trip to authenticate."""
    now = time.monotonic()
    if key_hash:
        cached = _principals.get(key_hash)
        if cached and cached[0] == epoch and now - cached[1] < PRINCIPAL_TTL:
            return cached[2]
        _principals.pop(key_hash, None)
    principal = keys.authenticate(db(), raw)
    if len(_principals) > 10000:
        _principals.clear()
    _principals[principal.key_hash] = (epoch, now, principal)
    return principal


def _flush_usage() -> None:
    try:
        keys.flush_usage(db(), redis_conn())
    except Exception:  # usage figures must never fail a request
        log.exception("could not fold key usage into PostgreSQL")


def _refuse(verdict) -> None:
    RATE_LIMITED.labels(verdict.scope).inc()
    raise RateLimited(
        f"rate limit exceeded ({verdict.scope}: {verdict.limit} requests per minute)",
        headers={
            "Retry-After": str(verdict.retry_after),
            "X-RateLimit-Limit": str(verdict.limit),
            "X-RateLimit-Scope": verdict.scope,
        },
    )


def _observe(status: int, size) -> None:
    started = g.get("started")
    elapsed = time.perf_counter() - started if started else 0.0
    route = request.url_rule.rule if request.url_rule else "<unmatched>"
    HTTP_REQUESTS.labels(request.method, route, str(status)).inc()
    HTTP_DURATION.labels(request.method, route, str(status)).observe(elapsed)
    queued = g.get("queued", 0.0)
    HTTP_QUEUE.observe(queued)
    principal = g.get("principal")
    line = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        + f".{int(time.time() % 1 * 1000):03d}Z",
        "request_id": g.get("request_id"),
        "client_ip": g.get("client_ip"),
        "method": request.method,
        "route": route,
        "path": request.path,
        "status": status,
        "duration_ms": round(elapsed * 1000, 2),
        "queue_ms": round(queued * 1000, 2),
        "bytes": size,
        "key_id": principal.key_id if principal else None,
        "user_id": principal.user_id if principal else None,
        "user_agent": request.headers.get("User-Agent", "")[:200],
    }
    if principal is not None and principal.monitored:
        line["monitored"] = True
    access_log.info(json.dumps(line, separators=(",", ":")))


def _configure_access_log(target: str) -> None:
    if getattr(access_log, "_configured", False):
        return
    handler = (
        logging.StreamHandler(sys.stdout) if target in ("-", "") else logging.FileHandler(target)
    )
    handler.setFormatter(logging.Formatter("%(message)s"))
    access_log.addHandler(handler)
    access_log.setLevel(logging.INFO)
    access_log.propagate = False
    access_log._configured = True


# Deeper than this no request of the API goes; a body nested further is refused before any
# code walks it (json itself gives up near 1000 levels with a RecursionError).
MAX_JSON_DEPTH = 64
_READ_CHUNK = 64 * 1024


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text} is out of range")
    return value


def _json_bytes(limit: int) -> bytes:
    """The request body, read only while it stays within `limit`: a declared Content-Length
    over it is refused unread, a chunked body once it crosses it."""
    too_large = JsonTooLarge(f"JSON bodies are limited to {limit} bytes", field="body")
    declared = request.content_length
    if declared is not None and declared > limit:
        raise too_large
    stream = request.stream
    chunks, received = [], 0
    while True:
        chunk = stream.read(min(_READ_CHUNK, limit + 1 - received))
        if not chunk:
            break
        chunks.append(chunk)
        received += len(chunk)
        if received > limit:
            raise too_large
    return b"".join(chunks)


def _depth(value) -> int:
    """Nesting depth of a parsed JSON value, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, level)
            if level > MAX_JSON_DEPTH:
                break
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, level + 1) for child in children)
    return deepest


def json_body(*, optional: bool = False) -> dict:
    """The request's JSON object, or a clear 4xx for anything that is not one: too large
    (413, MAX_JSON_BYTES), malformed, nested too deep, holding NaN/Infinity or a number out of
    range (400), not an object (422). With `optional`, an empty body is `{}`."""
    raw = _json_bytes(settings().max_json_bytes)
    if not raw:
        if optional:
            return {}
        raise ApiError("a JSON body is required", field="body")
    too_deep = JsonTooDeep(f"JSON nested deeper than {MAX_JSON_DEPTH} levels", field="body")
    try:
        body = json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        raise too_deep from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(f"malformed JSON: {exc}", field="body") from None
    if not isinstance(body, dict):
        raise ValidationError("the request body must be a JSON object", field="body")
    if _depth(body) > MAX_JSON_DEPTH:
        raise too_deep
    return body
