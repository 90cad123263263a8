"""Job inputs given by URL: `https://…`, `http://…` (only with INPUT_ALLOW_HTTP) and
`s3://bucket/key` (only buckets listed in INPUT_S3_BUCKETS).

Submission validates the URL only, without fetching it: scheme, credentials in the URL, the s3
bucket, and (through `netguard`, the same rule webhooks use) that the host resolves to public
addresses unless INPUT_ALLOW_PRIVATE. Probing happens in the worker after the whole input is on
local disk, not at submission on a bounded prefix: probing a prefix would mean fetching at
submission, and an MP4 whose moov atom sits at the end cannot be probed from its beginning.

A URL input has no owner record; tenancy checks apply to local paths only, so anything that is
not one of the schemes above (`file://`, `ftp://`, …) is refused rather than read as a path.

Not wired yet: jobs.py (submission) and worker.execute do not call this module so far.
"""

from __future__ import annotations

import http.client
import os
import ssl
import time
from urllib.parse import urljoin, urlsplit

from .errors import ValidationError
from .netguard import (
    PinnedHTTPConnection,
    PinnedHTTPSConnection,
    TargetRefused,
    TargetUnresolvable,
    checked_addresses,
)

URL_SCHEMES = ("https", "http", "s3")


def is_url(value) -> bool:
    """True when `value` names a remote input (or tries to: any `scheme://`), so it must be
    judged by `validate_input_url` and never resolved as a storage path."""
    return isinstance(value, str) and "://" in value


def validate_input_url(url: str, settings, *, field: str = "input") -> None:
    """Refuse, with a ValidationError on `field`, every URL input refusable without fetching."""
    if len(url) > 2048:
        raise ValidationError(f"{field} URL is too long", field=field)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in URL_SCHEMES:
        raise ValidationError(
            f"{field} URL scheme must be https, http or s3, not {scheme or 'none'!r}", field=field
        )
    if scheme == "http" and not settings.input_allow_http:
        raise ValidationError(f"{field} http:// URLs are not allowed; use https", field=field)
    if "@" in parts.netloc:
        raise ValidationError(f"{field} URL must not carry credentials", field=field)
    if scheme == "s3":
        bucket, key = parts.netloc, parts.path.lstrip("/")
        if not bucket or not key:
            raise ValidationError(f"{field} must be s3://bucket/key", field=field)
        if bucket not in settings.input_s3_buckets:
            raise ValidationError(f"{field} bucket {bucket!r} is not allowed", field=field)
        return
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise ValidationError(f"{field} URL has an invalid port", field=field) from None
    if not parts.hostname:
        raise ValidationError(f"{field} URL has no host", field=field)
    try:
        checked_addresses(parts.hostname, port, allow_private=settings.input_allow_private)
    except TargetUnresolvable as exc:
        raise ValidationError(f"{field} URL host does not resolve: {exc}", field=field) from None
    except TargetRefused as exc:
        raise ValidationError(f"{field} URL {exc}; refused", field=field) from None


MAX_REDIRECTS = 5
_CHUNK = 1024 * 1024


class InputFetchFailed(RuntimeError):
    """A URL input could not be downloaded; the message is the job's error. Not retried: a
    refused address, an error status or an oversize body will not change on a second try."""


def fetch_http(url: str, settings, dest: str, *, tls_context=None) -> str:
    """Download `url` to the file `dest` through netguard: each hop's host is resolved once,
    refused unless every address is public (or INPUT_ALLOW_PRIVATE), and connected to by the
    checked address; redirects are followed up to MAX_REDIRECTS, each hop checked again. The
    body streams to disk, capped at MAX_UPLOAD_BYTES; INPUT_FETCH_TIMEOUT bounds the whole
    transfer. Returns `dest`; on failure nothing is left at `dest`."""
    deadline = time.monotonic() + settings.input_fetch_timeout
    try:
        for _hop in range(MAX_REDIRECTS + 1):
            response, conn = _open(url, settings, deadline, tls_context)
            try:
                if response.status in (301, 302, 303, 307, 308):
                    location = response.getheader("Location")
                    if not location:
                        raise InputFetchFailed(
                            f"input URL answered {response.status} without Location"
                        )
                    url = urljoin(url, location)
                    continue
                if response.status != 200:
                    raise InputFetchFailed(
                        f"input URL answered HTTP {response.status} {response.reason}"
                    )
                _save(response, settings, dest, deadline)
                return dest
            finally:
                conn.close()
        raise InputFetchFailed(f"input URL redirected more than {MAX_REDIRECTS} times")
    except BaseException:
        if os.path.exists(dest):
            os.unlink(dest)
        raise


def _open(url, settings, deadline, tls_context):
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http") or (scheme == "http" and not settings.input_allow_http):
        raise InputFetchFailed(f"input URL {url!r}: scheme {scheme!r} is not allowed")
    if "@" in parts.netloc or not parts.hostname:
        raise InputFetchFailed(f"input URL {url!r} is not allowed")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
        addresses = checked_addresses(
            parts.hostname, port, allow_private=settings.input_allow_private
        )
    except (TargetRefused, TargetUnresolvable, ValueError) as exc:
        raise InputFetchFailed(f"input URL {parts.hostname}: {exc}; refused") from None
    timeout = _remaining(deadline)
    if scheme == "https":
        conn = PinnedHTTPSConnection(
            parts.hostname,
            port,
            addresses=addresses,
            timeout=timeout,
            context=tls_context or ssl.create_default_context(),
        )
    else:
        conn = PinnedHTTPConnection(parts.hostname, port, addresses=addresses, timeout=timeout)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        conn.request("GET", target, headers={"Accept-Encoding": "identity"})
        return conn.getresponse(), conn
    except (OSError, http.client.HTTPException) as exc:
        conn.close()
        raise InputFetchFailed(f"input URL {parts.hostname} unreachable: {exc}") from None


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise InputFetchFailed("input URL download timed out (INPUT_FETCH_TIMEOUT)")
    return left


def _save(response, settings, dest, deadline) -> None:
    cap = settings.max_upload_bytes
    length = response.getheader("Content-Length")
    if length and length.isdigit() and int(length) > cap:
        raise InputFetchFailed(f"input URL body is {length} bytes, over MAX_UPLOAD_BYTES ({cap})")
    size = 0
    with open(dest, "wb") as out:
        while True:
            try:
                chunk = response.read(_CHUNK)
            except (OSError, http.client.HTTPException) as exc:
                raise InputFetchFailed(f"input URL download failed: {exc}") from None
            if not chunk:
                break
            size += len(chunk)
            if size > cap:
                raise InputFetchFailed(f"input URL body is over MAX_UPLOAD_BYTES ({cap})")
            out.write(chunk)
            _remaining(deadline)
