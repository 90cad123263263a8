"""Job inputs given by URL: `https://…`, `http://…` (only with INPUT_ALLOW_HTTP) and
`s3://bucket/key` (only buckets listed in INPUT_S3_BUCKETS).

Submission validates the URL only, without fetching it: scheme, credentials in the URL, the s3
bucket, and (through `netguard`, the same rule webhooks use) that the host resolves to public
addresses unless INPUT_ALLOW_PRIVATE. Probing happens in the worker after the whole input is on
local disk, not at submission on a bounded prefix: probing a prefix would mean fetching at
submission, and an MP4 whose moov atom sits at the end cannot be probed from its beginning.

A URL input has no owner record; tenancy checks apply to local paths only, so anything that is
not one of the schemes above (`file://`, `ftp://`, …) is refused rather than read as a path.

The API for jobs.py and the worker: `is_url` tells a URL input from a storage path,
`validate_input_url` refuses at submission what can be refused without fetching, and `fetch`
downloads into a directory of the worker, failing with `InputFetchFailed` (its message is the
job's error). ffmpeg never opens the URL: it reads the downloaded file with
`-protocol_whitelist file` as for any other input. Not wired yet: jobs.py and worker.py do not
call this module so far.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import socket
import ssl
import tempfile
import threading
import time
from urllib.parse import unquote, urljoin, urlsplit

from . import objectstore, storage
from .errors import ValidationError
from .netguard import (
    TargetRefused,
    TargetUnresolvable,
    checked_addresses,
    pinned_connection,
)

URL_SCHEMES = ("https", "http", "s3")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_UNSAFE_CHARS = re.compile(r"[\x00-\x20\x7f]")


def is_url(value) -> bool:
    """True when `value` names a remote input (or tries to: it starts with any `scheme://`),
    so it must be judged by `validate_input_url` and never resolved as a storage path. Stored
    names never hold ':' (storage.safe_name), so no storage path looks like this."""
    return isinstance(value, str) and _SCHEME.match(value) is not None


def split_s3(url: str) -> tuple[str, str]:
    """(bucket, key) of `s3://bucket/key`, the key taken literally as the AWS CLI does: no
    percent-decoding, and '?' or '#' are part of it."""
    bucket, _, key = url[len("s3://") :].partition("/")
    return bucket, key


def validate_input_url(url: str, settings, *, field: str = "input") -> None:
    """Refuse, with a ValidationError on `field`, every URL input refusable without fetching."""
    if len(url) > 2048:
        raise ValidationError(f"{field} URL is too long", field=field)
    if _UNSAFE_CHARS.search(url):
        raise ValidationError(
            f"{field} URL must not contain spaces or control characters", field=field
        )
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ValidationError(f"{field} URL is malformed", field=field) from None
    scheme = parts.scheme.lower()
    if scheme not in URL_SCHEMES:
        raise ValidationError(
            f"{field} URL scheme must be https, http or s3, not {scheme or 'none'!r}", field=field
        )
    if scheme == "http" and not settings.input_allow_http:
        raise ValidationError(f"{field} http:// URLs are not allowed; use https", field=field)
    if scheme == "s3":
        bucket, key = split_s3(url)
        if "@" in bucket:
            raise ValidationError(f"{field} URL must not carry credentials", field=field)
        if not bucket or not key:
            raise ValidationError(f"{field} must be s3://bucket/key", field=field)
        if bucket not in settings.input_s3_buckets:
            raise ValidationError(f"{field} bucket {bucket!r} is not allowed", field=field)
        if len(key.encode()) > 1024:
            raise ValidationError(f"{field} s3 key is longer than 1024 bytes", field=field)
        return
    if "@" in parts.netloc:
        raise ValidationError(f"{field} URL must not carry credentials", field=field)
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


def input_name(url: str) -> str:
    """The downloaded file's name: the last segment of the URL's path (of the key for s3),
    percent-decoded for http(s), made safe by storage.safe_name; "input" when nothing is left."""
    if url[:5].lower() == "s3://":
        last = split_s3(url)[1].rsplit("/", 1)[-1]
    else:
        try:
            last = unquote(urlsplit(url).path).rsplit("/", 1)[-1]
        except ValueError:
            last = ""
    try:
        return storage.safe_name(last)
    except ValidationError:
        return "input"


MAX_REDIRECTS = 5
_CHUNK = 1024 * 1024


class InputFetchFailed(RuntimeError):
    """A URL input could not be downloaded; the message is the job's error, written for the
    user (it names no path of the worker). Not retried: a refused address, an error status, a
    missing key or an oversize body will not change on a second try."""


def fetch(url: str, dest_dir: str, settings, *, tls_context=None) -> str:
    """Download the URL input `url` into `dest_dir` (the job's own directory on the worker)
    and return the file's path; its name is `input_name(url)` (a file of that name is
    replaced). The URL is judged again by `validate_input_url`, since the worker's settings
    and DNS are what count now. https/http go through `fetch_http`; s3://bucket/key through
    boto3 (`objectstore.client_for`). Any failure raises InputFetchFailed, and nothing is left
    in `dest_dir`: the body is written to a hidden temporary file renamed into place once
    whole. `tls_context` overrides the default certificate check (tests)."""
    try:
        validate_input_url(url, settings)
    except ValidationError as exc:
        raise InputFetchFailed(exc.message) from None
    final = os.path.join(dest_dir, input_name(url))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".fetch-", dir=dest_dir)
        os.close(fd)
    except OSError as exc:
        raise InputFetchFailed(f"the worker could not store the input: {_reason(exc)}") from None
    try:
        if url[:5].lower() == "s3://":
            fetch_s3(url, settings, tmp)
        else:
            fetch_http(url, settings, tmp, tls_context=tls_context)
        os.replace(tmp, final)
    except BaseException:
        _unlink(tmp)
        raise
    return final


class _Deadline:
    """INPUT_FETCH_TIMEOUT for one whole transfer. `arm(abort)` runs `abort` from a timer
    thread when time is up, to break a read that blocks (a server that stalls or drips);
    whatever the transfer raises after that is reported as the timeout."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.at = time.monotonic() + seconds
        self.expired = False
        self._timer: threading.Timer | None = None

    def failure(self) -> InputFetchFailed:
        return InputFetchFailed(
            f"input URL download timed out after {self.seconds:g} s (INPUT_FETCH_TIMEOUT)"
        )

    def remaining(self) -> float:
        left = self.at - time.monotonic()
        if left <= 0 or self.expired:
            raise self.failure()
        return left

    def arm(self, abort) -> None:
        self.disarm()

        def fire():
            self.expired = True
            with contextlib.suppress(OSError):  # best effort: the reader notices `expired`
                abort()

        self._timer = threading.Timer(self.remaining(), fire)
        self._timer.daemon = True
        self._timer.start()

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def fetch_http(url: str, settings, dest: str, *, tls_context=None) -> str:
    """Download `url` to the file `dest` through netguard: each hop's host is resolved once,
    refused unless every address is public (or INPUT_ALLOW_PRIVATE), and connected to by the
    checked address; redirects are followed up to MAX_REDIRECTS, each hop checked again. The
    body streams to disk, capped at MAX_UPLOAD_BYTES; INPUT_FETCH_TIMEOUT bounds the whole
    transfer (a timer shuts the socket down when it is over). Returns `dest`; on failure
    nothing is left at `dest`."""
    deadline = _Deadline(settings.input_fetch_timeout)
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
                deadline.disarm()
                conn.close()
        raise InputFetchFailed(f"input URL redirected more than {MAX_REDIRECTS} times")
    except BaseException as exc:
        _unlink(dest)
        if deadline.expired and not isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise deadline.failure() from None
        raise
    finally:
        deadline.disarm()


def _open(url, settings, deadline, tls_context):
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http") or (scheme == "http" and not settings.input_allow_http):
        raise InputFetchFailed(f"input URL scheme {scheme!r} is not allowed")
    if "@" in parts.netloc or not parts.hostname:
        raise InputFetchFailed("input URL without a host or with credentials is not allowed")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
        addresses = checked_addresses(
            parts.hostname, port, allow_private=settings.input_allow_private
        )
    except (TargetRefused, TargetUnresolvable, ValueError) as exc:
        raise InputFetchFailed(f"input URL {parts.hostname}: {exc}; refused") from None
    conn, target = pinned_connection(parts, port, addresses, deadline.remaining(), tls_context)
    opened: list[socket.socket] = []
    deadline.arm(lambda: _shutdown(opened))
    try:
        conn.connect()
        # http.client drops conn.sock once a response says Connection: close, so the timer
        # holds the socket itself; checked after, in case time ran out during the connect
        opened.append(conn.sock)
        deadline.remaining()
        conn.request("GET", target, headers={"Accept-Encoding": "identity"})
        return conn.getresponse(), conn
    except BaseException as exc:
        deadline.disarm()
        conn.close()
        if isinstance(exc, InputFetchFailed):
            raise
        if deadline.expired or isinstance(exc, TimeoutError):
            raise deadline.failure() from None
        if isinstance(exc, (OSError, http.client.HTTPException)):
            raise InputFetchFailed(
                f"input URL {parts.hostname} unreachable: {_reason(exc)}"
            ) from None
        raise


def _shutdown(opened: list) -> None:
    """Wake a read blocked on the transfer's socket: shut down the TCP socket underneath
    (under TLS too, bypassing SSLSocket.shutdown, which would drop the TLS state first)."""
    for sock in opened:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _save(response, settings, dest, deadline) -> None:
    cap = settings.max_upload_bytes
    length = response.getheader("Content-Length")
    expected = int(length) if length and length.isdigit() else None
    if expected is not None and expected > cap:
        raise InputFetchFailed(f"input URL body is {length} bytes, over MAX_UPLOAD_BYTES ({cap})")
    with _open_dest(dest) as out:
        size = _copy(response.read, out, cap, deadline, (OSError, http.client.HTTPException))
    if expected is not None and size != expected:
        raise InputFetchFailed(f"input URL download was cut short ({size} of {expected} bytes)")


def fetch_s3(url: str, settings, dest: str) -> str:
    """Download `s3://bucket/key` to the file `dest` with boto3 (`objectstore.client_for`:
    S3_ENDPOINT_URL, S3_REGION, S3_ADDRESSING_STYLE, boto3's credential chain). The bucket
    must be in INPUT_S3_BUCKETS; the object's size (HEAD) and the bytes streamed are capped at
    MAX_UPLOAD_BYTES; the GET is pinned to the HEAD's ETag, so an object replaced meanwhile
    fails instead of mixing. INPUT_FETCH_TIMEOUT bounds the whole transfer: the transfer runs
    in a thread the caller stops waiting for when time is up (a blocked boto3 read cannot be
    interrupted; that thread writes nothing more and ends with boto3's own timeouts). Returns
    `dest`; on failure nothing is left at `dest`."""
    bucket, key = split_s3(url)
    if bucket not in settings.input_s3_buckets:
        raise InputFetchFailed(f"input bucket {bucket!r} is not allowed")
    deadline = _Deadline(settings.input_fetch_timeout)
    outcome: dict = {}
    try:
        with _open_dest(dest) as out:
            thread = threading.Thread(
                target=_s3_transfer,
                args=(settings, bucket, key, out, deadline, outcome),
                name="input-fetch-s3",
                daemon=True,
            )
            thread.start()
            thread.join(max(0.0, deadline.at - time.monotonic()))
            if thread.is_alive():
                deadline.expired = True  # the thread stops before its next write
                raise deadline.failure()
        if "error" in outcome:
            raise outcome["error"]
        return dest
    except BaseException:
        _unlink(dest)
        raise


def _s3_transfer(settings, bucket, key, out, deadline, outcome) -> None:
    try:
        _s3_copy(settings, bucket, key, out, deadline)
    except InputFetchFailed as exc:
        outcome["error"] = exc
    except Exception as exc:  # anything else is reported to the waiting caller too
        outcome["error"] = InputFetchFailed(f"input s3://{bucket}/{key}: {_reason(exc)}")


def _s3_copy(settings, bucket, key, out, deadline) -> None:
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        ReadTimeoutError,
    )

    where = f"s3://{bucket}/{key}"
    cap = settings.max_upload_bytes
    try:
        client = objectstore.client_for(settings)
        head = client.head_object(Bucket=bucket, Key=key)
        size = head["ContentLength"]
        if size > cap:
            raise InputFetchFailed(f"input {where} is {size} bytes, over MAX_UPLOAD_BYTES ({cap})")
        deadline.remaining()
        body = client.get_object(Bucket=bucket, Key=key, IfMatch=head["ETag"])["Body"]
        try:
            copied = _copy(body.read, out, cap, deadline, (BotoCoreError, OSError))
        finally:
            body.close()
        if copied != size:
            raise InputFetchFailed(f"input {where} download was cut short ({copied} of {size})")
    except ClientError as exc:
        raise InputFetchFailed(_s3_reason(where, bucket, exc)) from None
    except NoCredentialsError:
        raise InputFetchFailed(f"input {where}: the service has no S3 credentials") from None
    except (ConnectTimeoutError, ReadTimeoutError):
        raise InputFetchFailed(f"input {where}: the S3 endpoint timed out") from None
    except EndpointConnectionError:
        raise InputFetchFailed(f"input {where}: the S3 endpoint is unreachable") from None
    except BotoCoreError as exc:
        raise InputFetchFailed(f"input {where}: {exc}") from None


def _s3_reason(where, bucket, exc) -> str:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code == "NoSuchBucket":
        return f"input bucket {bucket!r} does not exist"
    if code in ("NoSuchKey", "404", "NotFound") or status == 404:
        return f"input {where} does not exist"
    if code in ("AccessDenied", "403", "Forbidden") or status == 403:
        return f"input {where}: access denied"
    if code in ("PreconditionFailed", "412") or status == 412:
        return f"input {where} changed during the download"
    return f"input {where}: S3 answered {code or status}"


def _copy(read, out, cap: int, deadline: _Deadline, read_errors) -> int:
    """Copy chunks from `read` to `out` until EOF, counting them against `cap` and checking
    the deadline; returns the byte count. Read and write errors become InputFetchFailed."""
    size = 0
    while True:
        try:
            chunk = read(_CHUNK)
        except read_errors as exc:
            if deadline.expired:
                raise deadline.failure() from None
            raise InputFetchFailed(f"input URL download failed: {_reason(exc)}") from None
        if not chunk:
            break
        size += len(chunk)
        if size > cap:
            raise InputFetchFailed(f"input URL body is over MAX_UPLOAD_BYTES ({cap})")
        deadline.remaining()
        try:
            out.write(chunk)
        except OSError as exc:
            raise InputFetchFailed(
                f"the worker could not store the input: {_reason(exc)}"
            ) from None
    deadline.remaining()
    return size


def _open_dest(dest):
    try:
        return open(dest, "wb")
    except OSError as exc:
        raise InputFetchFailed(f"the worker could not store the input: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    """What went wrong, for a user: no file name of the worker, no source location."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not accepted ({exc.verify_message})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error ({exc.reason or 'handshake failed'})"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, http.client.IncompleteRead):
        return "the connection closed before the body was complete"
    return str(exc) or type(exc).__name__


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
