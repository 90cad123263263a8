"""Errors that carry their own HTTP status and machine-readable code.

The API turns any `ApiError` into `{"error": {"code": ..., "message": ..., "field": ...}}`;
the CLI turns it into exit code 1 (or 2 for `ValidationError`) with the same message.
"""

from __future__ import annotations


class ApiError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, field: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.headers = headers or {}

    def to_dict(self) -> dict:
        body = {"code": self.code, "message": self.message}
        if self.field:
            body["field"] = self.field
        return {"error": body}


class ValidationError(ApiError):
    status = 422
    code = "validation_error"


class InputRejected(ApiError):
    """The input media cannot or must not be processed (format, limits, unreadable)."""

    status = 422
    code = "input_rejected"


class PathError(ApiError):
    status = 400
    code = "invalid_path"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class Conflict(ApiError):
    status = 409
    code = "conflict"


class PayloadTooLarge(ApiError):
    status = 413
    code = "payload_too_large"


class JsonTooLarge(PayloadTooLarge):
    """A JSON body over MAX_JSON_BYTES (refused before it is read)."""

    code = "json_too_large"


class JsonTooDeep(ApiError):
    """A JSON body nested deeper than any request of the API needs."""

    code = "json_too_deep"


class UploadIncomplete(ApiError):
    """The request body ended before what it declared (Content-Length, the closing multipart
    boundary, the last chunk): the client went away mid-upload."""

    status = 400
    code = "upload_incomplete"


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"


class Forbidden(ApiError):
    status = 403
    code = "forbidden"


class RateLimited(ApiError):
    status = 429
    code = "rate_limited"


class Unavailable(ApiError):
    status = 503
    code = "unavailable"


class GpuUnavailable(ApiError):
    status = 422
    code = "gpu_unavailable"


class InsufficientStorage(ApiError):
    """The storage root would fall below its free-space reserve."""

    status = 507
    code = "insufficient_storage"


class StorageQuotaExceeded(InsufficientStorage):
    """The user's stored bytes would exceed their quota."""

    code = "storage_quota_exceeded"


# What a client is told to wait after a dependency outage answer: long enough not to hammer a
# recovering server, short enough that a blip costs a client little.
DEPENDENCY_RETRY_AFTER = 5


class DependencyUnavailable(Unavailable):
    """PostgreSQL or Redis cannot be reached: a 503 with Retry-After, so load balancers,
    clients and alert rules tell an outage from a bug (a 500)."""

    code = "dependency_unavailable"

    def __init__(self, dependency: str, *, retry_after: int = DEPENDENCY_RETRY_AFTER):
        super().__init__(
            f"{dependency} is unavailable; retry later",
            headers={"Retry-After": str(retry_after)},
        )
        self.dependency = dependency


# SQLSTATE classes and codes of a server that cannot serve at all: connection exceptions,
# insufficient resources (too many connections, disk full), and a server shutting down or
# starting up. Other OperationalErrors (a statement timeout, a deadlock, a lock not available)
# are answers of a working server and stay what they are.
_PG_OUTAGE_CLASSES = ("08", "53")
_PG_OUTAGE_CODES = ("57P01", "57P02", "57P03")


def unavailable_dependency(exc: BaseException) -> str | None:
    """The dependency ("postgresql" or "redis") whose outage `exc` reports, else None."""
    import psycopg
    import redis.exceptions
    from psycopg_pool import PoolTimeout

    if isinstance(exc, PoolTimeout):
        return "postgresql"
    if isinstance(exc, psycopg.OperationalError):
        state = exc.sqlstate
        if state is None or state.startswith(_PG_OUTAGE_CLASSES) or state in _PG_OUTAGE_CODES:
            return "postgresql"
        return None
    if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        return "redis"
    return None
