"""Job webhooks: signed with HMAC-SHA256, refused for internal addresses, retried with backoff.

Receivers verify `X-FFmpeg-API-Signature: sha256=<hex>` computed over
`<X-FFmpeg-API-Timestamp>.<raw body>` with the shared WEBHOOK_SECRET.

The target's name is resolved once per attempt; every address it resolves to must be public
(unless WEBHOOK_ALLOW_PRIVATE), and the connection goes to one of those checked addresses
while the Host header, TLS SNI and certificate check use the name. The name is never resolved
a second time (a DNS answer that changes between check and connect cannot reach inside), and a
redirect is never followed: a 3xx answer is a failed attempt.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import ipaddress
import json
import logging
import socket
import ssl
import time
from datetime import timedelta
from urllib.parse import urlsplit

from .errors import ValidationError

log = logging.getLogger(__name__)


class TargetUnresolvable(Exception):
    """The webhook host has no address (a failed attempt: DNS may answer later)."""


class TargetRefused(RuntimeError):
    """The webhook host resolves to an address that is not public."""


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


def checked_addresses(host: str, port: int, *, allow_private: bool) -> list[tuple[int, tuple]]:
    """Resolve `host` once and return its (family, sockaddr) pairs, every one of them public
    unless `allow_private`; the caller connects to these and never resolves the name again."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise TargetUnresolvable(f"{host}: {exc}") from None
    addresses = list(dict.fromkeys((family, sockaddr) for family, _, _, _, sockaddr in infos))
    if not addresses:
        raise TargetUnresolvable(f"{host}: no address")
    if not allow_private:
        bad = [sockaddr[0] for _, sockaddr in addresses if is_internal(sockaddr[0])]
        if bad:
            raise TargetRefused(f"resolves to an internal address ({bad[0]})")
    return addresses


def is_internal(addr: str) -> bool:
    """True for every address that is not publicly routable: whatever `ipaddress` does not call
    global (loopback, RFC 1918, link-local, carrier-grade NAT 100.64/10, ULA, …), plus
    multicast, reserved, unspecified and IPv6 site-local (fec0::/10, deprecated, which
    `ipaddress` calls global). IPv4-mapped (::ffff:a.b.c.d) and 6to4 addresses are judged by
    the IPv4 address they carry; NAT64 (64:ff9b::/96) is reserved, hence refused."""
    ip = ipaddress.ip_address(addr.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped:
            return is_internal(str(ip.ipv4_mapped))
        if ip.is_site_local:
            return True
        if ip.sixtofour and is_internal(str(ip.sixtofour)):
            return True  # a 6to4 relay would deliver to the embedded IPv4 address
    return not ip.is_global or ip.is_multicast or ip.is_reserved or ip.is_unspecified


def _connect(addresses: list[tuple[int, tuple]], timeout: float) -> socket.socket:
    """A TCP socket to the first checked address that accepts; by sockaddr, so nothing on this
    path looks the name up again."""
    last: OSError | None = None
    for family, sockaddr in addresses:
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.settimeout(timeout)
            sock.connect(sockaddr)
            return sock
        except OSError as exc:
            sock.close()
            last = exc
    raise last or OSError("no address to connect to")


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """http.client to a checked address; `host` (the URL's name) only fills the Host header."""

    def __init__(self, host, port, *, addresses, timeout):
        super().__init__(host, port, timeout=timeout)
        self._addresses = addresses

    def connect(self):
        self.sock = _connect(self._addresses, self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """As _PinnedHTTPConnection under TLS: SNI and the certificate check use the URL's name."""

    def __init__(self, host, port, *, addresses, timeout, context):
        super().__init__(host, port, timeout=timeout, context=context)
        self._addresses = addresses
        self._tls = context

    def connect(self):
        self.sock = self._tls.wrap_socket(
            _connect(self._addresses, self.timeout), server_hostname=self.host
        )


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
    if parts.scheme == "https":
        conn = _PinnedHTTPSConnection(
            parts.hostname,
            port,
            addresses=addresses,
            timeout=timeout,
            context=tls_context or ssl.create_default_context(),
        )
    else:
        conn = _PinnedHTTPConnection(parts.hostname, port, addresses=addresses, timeout=timeout)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
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
