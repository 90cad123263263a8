"""Job webhooks: signed with HMAC-SHA256, refused for internal addresses, retried with backoff.

Receivers verify `X-FFmpeg-API-Signature: sha256=<hex>` computed over
`<X-FFmpeg-API-Timestamp>.<raw body>` with the shared WEBHOOK_SECRET.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import time
import urllib.error
import urllib.request
from datetime import timedelta
from urllib.parse import urlsplit

from .errors import ValidationError

log = logging.getLogger(__name__)


def validate_url(url, *, allow_private: bool) -> None:
    if not isinstance(url, str) or len(url) > 2048:
        raise ValidationError("webhook_url must be an http(s) URL", field="webhook_url")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError("webhook_url must be an http(s) URL", field="webhook_url")
    if parts.username or parts.password:
        raise ValidationError("webhook_url must not carry credentials", field="webhook_url")
    if allow_private:
        return
    for addr in resolve(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)):
        if is_internal(addr):
            raise ValidationError(
                f"webhook_url resolves to an internal address ({addr}); refused",
                field="webhook_url",
            )


def resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise ValidationError(
            f"webhook_url host does not resolve: {exc}", field="webhook_url"
        ) from None
    return sorted({info[4][0] for info in infos})


def is_internal(addr: str) -> bool:
    ip = ipaddress.ip_address(addr.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return (
        ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


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
    exponential backoff until WEBHOOK_MAX_ATTEMPTS; then the RQ job fails visibly."""
    from rq import Queue, get_current_job

    from .settings import Settings

    settings = Settings.from_env()
    host = urlsplit(url).hostname or ""
    if not settings.webhook_allow_private:
        # Checked again at delivery: DNS may have changed since submission.
        port = urlsplit(url).port or 443
        bad = [a for a in resolve(host, port) if is_internal(a)]
        if bad:
            raise RuntimeError(f"webhook target {host} now resolves internally ({bad[0]})")
    raw = body.encode()
    ts = str(int(time.time()))
    request = urllib.request.Request(  # noqa: S310 - scheme checked to be http(s)
        url,
        data=raw,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "ffmpeg-api-webhook/1",
            "X-FFmpeg-API-Timestamp": ts,
            "X-FFmpeg-API-Signature": sign(settings.webhook_secret, ts, raw),
            "X-FFmpeg-API-Attempt": str(attempt),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 - scheme checked
            status = resp.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError) as exc:
        status = None
        log.warning("webhook to %s failed: %s", host, exc)
    if status is not None and 200 <= status < 300:
        return {"delivered": True, "status": status, "attempt": attempt}
    if attempt >= settings.webhook_max_attempts:
        raise RuntimeError(f"webhook to {host} failed after {attempt} attempts (last {status})")
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
    return {"delivered": False, "status": status, "attempt": attempt, "retry_in": delay}
