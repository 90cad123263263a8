"""Job webhooks: signed with HMAC-SHA256, refused for internal addresses, retried with backoff.

Receivers verify `X-FFmpeg-API-Signature: sha256=<hex>` computed over
`<X-FFmpeg-API-Timestamp>.<raw body>` with the shared WEBHOOK_SECRET.

The target's name is resolved once per attempt (the rule lives in `netguard`, shared with URL
inputs); every address it resolves to must be public
(unless WEBHOOK_ALLOW_PRIVATE), and the connection goes to one of those checked addresses
while the Host header, TLS SNI and certificate check use the name. The name is never resolved
a second time (a DNS answer that changes between check and connect cannot reach inside), and a
redirect is never followed: a 3xx answer is a failed attempt.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import ssl
import time
from datetime import timedelta
from urllib.parse import urlsplit

from .errors import ValidationError
from .netguard import (
    TargetRefused,
    TargetUnresolvable,
    checked_addresses,
    pinned_connection,
)

log = logging.getLogger(__name__)


def validate_url(url, *, allow_private: bool) -> None:
    if not isinstance(url, str) or len(url) > 2048:
        raise ValidationError("webhook_url must be an http(s) URL", field="webhook_url")
    parts = urlsplit(url)
    try:
        port = _port(parts)
    except ValueError:
        raise ValidationError("webhook_url has an invalid port", field="webhook_url") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError("webhook_url must be an http(s) URL", field="webhook_url")
    if parts.username or parts.password:
        raise ValidationError("webhook_url must not carry credentials", field="webhook_url")
    if allow_private:
        return
    try:
        checked_addresses(parts.hostname, port, allow_private=False)
    except TargetUnresolvable as exc:
        raise ValidationError(
            f"webhook_url host does not resolve: {exc}", field="webhook_url"
        ) from None
    except TargetRefused as exc:
        raise ValidationError(f"webhook_url {exc}; refused", field="webhook_url") from None


def _port(parts) -> int:
    return parts.port or (443 if parts.scheme == "https" else 80)


def post(
    url: str,
    body: bytes,
    headers: dict,
    *,
    allow_private: bool,
    timeout: float = 10.0,
    tls_context: ssl.SSLContext | None = None,
) -> http.client.HTTPResponse:
    """POST `body` once to `url` at an address checked by `checked_addresses`. No redirect is
    followed and no proxy is used (either would connect somewhere unchecked). Returns the
    response with its body read (at most 64 KiB kept)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    port = _port(parts)
    addresses = checked_addresses(parts.hostname, port, allow_private=allow_private)
    conn, target = pinned_connection(parts, port, addresses, timeout, tls_context)
    try:
        conn.request("POST", target, body=body, headers=headers)
        response = conn.getresponse()
        response.read(64 * 1024)
        return response
    finally:
        conn.close()


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def payload_for(job: dict) -> dict:
    from .jobs import public

    data = public(job)
    return {"event": f"job.{data['status']}", "job": data}


def schedule(redis_conn, settings, job_row: dict) -> None:
    """Queue the first delivery attempt on the high-priority queue."""
    from rq import Queue

    if not job_row.get("webhook_url") or not settings.webhook_secret:
        return
    body = json.dumps(payload_for(job_row), default=str, sort_keys=True)
    Queue("high", connection=redis_conn).enqueue(
        "ffmpeg_api.webhooks.deliver",
        job_row["webhook_url"],
        body,
        1,
        job_timeout=60,
        result_ttl=3600,
        failure_ttl=7 * 86400,
        description=f"webhook for job {job_row['id']}",
    )


def deliver(url: str, body: str, attempt: int) -> dict:
    """One attempt (runs in an RQ worker). On failure the next attempt is scheduled with
    exponential backoff until WEBHOOK_MAX_ATTEMPTS; then the RQ job fails visibly. A target
    that now resolves to an internal address fails at once (TargetRefused), without retry."""
    from rq import Queue, get_current_job

    from .settings import Settings

    settings = Settings.from_env()
    host = urlsplit(url).hostname or ""
    raw = body.encode()
    ts = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "ffmpeg-api-webhook/1",
        "X-FFmpeg-API-Timestamp": ts,
        "X-FFmpeg-API-Signature": sign(settings.webhook_secret, ts, raw),
        "X-FFmpeg-API-Attempt": str(attempt),
    }
    status = None
    try:
        response = post(url, raw, headers, allow_private=settings.webhook_allow_private)
    except TargetRefused as exc:
        # Checked again at delivery: DNS may have changed since submission.
        raise TargetRefused(f"webhook target {host} {exc}; refused") from None
    except (TargetUnresolvable, OSError, http.client.HTTPException) as exc:
        error = f"{type(exc).__name__}: {exc}"
    else:
        status = response.status
        if 200 <= status < 300:
            return {"delivered": True, "status": status, "attempt": attempt}
        if 300 <= status < 400:
            location = response.getheader("Location", "")
            error = f"answered {status} redirecting to {location!r}; redirects are not followed"
        else:
            error = f"answered {status}"
    log.warning("webhook to %s failed (attempt %d): %s", host, attempt, error)
    if attempt >= settings.webhook_max_attempts:
        raise RuntimeError(f"webhook to {host} failed after {attempt} attempts (last: {error})")
    delay = settings.webhook_backoff * (2 ** (attempt - 1))
    current = get_current_job()
    queue = Queue(
        current.origin if current else "high", connection=current.connection if current else None
    )
    queue.enqueue_in(
        timedelta(seconds=delay),
        "ffmpeg_api.webhooks.deliver",
        url,
        body,
        attempt + 1,
        job_timeout=60,
        result_ttl=3600,
        failure_ttl=7 * 86400,
    )
    return {
        "delivered": False,
        "status": status,
        "error": error,
        "attempt": attempt,
        "retry_in": delay,
    }
