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
