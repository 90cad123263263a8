"""The OpenAPI document and a readable page rendered from it (no CDN: hosts may be offline).

A test checks that every route of the application is documented here and nothing else is.
"""

from __future__ import annotations

import html

from flask import Blueprint, Response, jsonify

from .. import __version__
from ..media.schema import OPERATION_SCHEMAS
from .pipeline import public

bp = Blueprint("docs", __name__)

ERROR = {"$ref": "#/components/schemas/Error"}
JOB = {"$ref": "#/components/schemas/Job"}


def _resp(description: str, schema=None, content_type="application/json") -> dict:
    r = {"description": description}
    if schema is not None:
        r["content"] = {content_type: {"schema": schema}}
    return r


def _errors(*codes: int) -> dict:
    text = {
        400: "malformed request",
        401: "missing, invalid or revoked key",
        403: "not an admin key",
        404: "not found",
        409: "conflicting state",
        413: "too large",
        422: "invalid input",
        429: "rate limited (see Retry-After)",
        503: "maintenance mode (see Retry-After) or unhealthy",
    }
    return {str(c): _resp(text[c], ERROR) for c in codes}


AUTH_ERRORS = (401, 429, 503)
ADMIN_ERRORS = (401, 403, 429, 503)
JOB_ID = {
    "name": "job_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "format": "uuid"},
}
KEY_ID = {"name": "key_id", "in": "path", "required": True, "schema": {"type": "string"}}


def _op(
    summary, responses, *, tag, params=None, body=None, secured=True, admin=False, description=None
):
    op = {"summary": summary, "tags": [tag], "responses": responses}
    if description:
        op["description"] = description
    if params:
        op["parameters"] = params
    if body:
        op["requestBody"] = body
    if not secured:
        op["security"] = []
    if admin:
        op["x-admin-only"] = True
    return op


def _json_body(schema, required=True):
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def build_spec() -> dict:
    job_links = {
        "type": "object",
        "properties": {k: {"type": "string"} for k in ("self", "logs", "output", "cancel")},
    }
    schemas = {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {
                        "code": {"type": "string"},
                        "message": {"type": "string"},
                        "field": {"type": "string"},
                    },
                },
                "request_id": {"type": "string"},
            },
        },
        "Job": {
            "type": "object",
            "properties": {
                "id": {"type": "string", "format": "uuid"},
                "status": {
                    "type": "string",
                    "enum": ["queued", "processing", "completed", "failed", "cancelled"],
                },
                "progress": {"type": "number", "description": "percent, 0-100"},
                "stage": {"type": "string", "nullable": True},
                "eta_seconds": {"type": "number", "nullable": True},
                "priority": {"type": "string", "enum": ["high", "normal", "low"]},
                "hardware": {"type": "string", "enum": ["auto", "cpu", "gpu"]},
                "encoder": {"type": "string", "nullable": True},
                "queue": {"type": "string"},
                "input_path": {"type": "string"},
                "input_duration": {"type": "number"},
                "output_format": {"type": "string"},
                "operations": {
                    "type": "array",
                    "items": {"$ref": "#/components/schemas/Operation"},
                },
                "output_path": {"type": "string", "nullable": True},
                "outputs": {"type": "array", "items": {"type": "string"}},
                "output_size": {"type": "integer", "nullable": True},
                "result": {"type": "object", "nullable": True},
                "error": {"type": "string", "nullable": True},
                "retry_count": {"type": "integer"},
                "worker_id": {"type": "string", "nullable": True},
                "created_at": {"type": "string", "format": "date-time"},
                "updated_at": {"type": "string", "format": "date-time"},
                "started_at": {"type": "string", "format": "date-time", "nullable": True},
                "completed_at": {"type": "string", "format": "date-time", "nullable": True},
                "links": job_links,
            },
        },
        "ConvertRequest": {
            "type": "object",
            "required": ["input", "operations"],
            "additionalProperties": False,
            "properties": {
                "input": {
                    "type": "string",
                    "description": (
                        "a path returned by POST /files, or a URL the worker fetches:"
                        " https://..., http://... (when INPUT_ALLOW_HTTP), s3://bucket/key"
                        " (buckets in INPUT_S3_BUCKETS); internal addresses are refused"
                    ),
                },
                "output": {
                    "type": "string",
                    "default": "mp4",
                    "description": "output container of the primary output",
                },
                "operations": {
                    "type": "array",
                    "minItems": 1,
                    "items": {"$ref": "#/components/schemas/Operation"},
                },
                "priority": {
                    "type": "string",
                    "enum": ["high", "normal", "low"],
                    "default": "normal",
                },
                "hardware": {"type": "string", "enum": ["auto", "cpu", "gpu"], "default": "auto"},
                "webhook_url": {"type": "string", "format": "uri"},
            },
        },
        "Operation": {
            "oneOf": [{"$ref": f"#/components/schemas/{name}"} for name in OPERATION_SCHEMAS],
            "discriminator": {"propertyName": "type"},
        },
        **OPERATION_SCHEMAS,
        "Component": {
            "type": "object",
            "properties": {
                "status": {"type": "string", "enum": ["ok", "warning", "error"]},
                "ms": {"type": "number"},
                "error": {"type": "string"},
            },
        },
        "Health": {
            "type": "object",
            "properties": {
                "status": {"type": "string", "enum": ["healthy", "degraded", "unhealthy"]},
                "components": {
                    "type": "object",
                    "description": "Only for callers sending an API key or METRICS_TOKEN.",
                    "additionalProperties": {"$ref": "#/components/schemas/Component"},
                },
            },
        },
        "ApiKey": {
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "name": {"type": "string"},
                "user_id": {"type": "string"},
                "is_admin": {"type": "boolean"},
                "active": {"type": "boolean"},
                "rate_limit": {"type": "integer", "nullable": True},
                "monitored": {"type": "boolean"},
                "request_count": {"type": "integer"},
                "last_used_at": {"type": "string", "nullable": True},
                "created_at": {"type": "string"},
                "revoked_at": {"type": "string", "nullable": True},
            },
        },
        "Maintenance": {
            "type": "object",
            "properties": {
                "enabled": {"type": "boolean"},
                "reason": {"type": "string", "nullable": True},
                "since": {"type": "number", "nullable": True},
                "ttl": {"type": "integer", "nullable": True},
            },
        },
        "RateLimits": {
            "type": "object",
            "properties": {
                "global_per_minute": {"type": "integer"},
                "per_key_default_per_minute": {"type": "integer"},
                "ddos_protection": {"type": "boolean"},
                "ddos_ip_per_minute": {"type": "integer"},
            },
        },
    }
    obj = {"type": "object"}
    paths = {
        "/health": {
            "get": _op(
                "Check every component",
                {
                    "200": _resp("healthy or degraded", {"$ref": "#/components/schemas/Health"}),
                    "503": _resp("unhealthy", {"$ref": "#/components/schemas/Health"}),
                },
                tag="health",
                secured=False,
                description="Anyone gets the status; the components only a caller sending an"
                " API key or METRICS_TOKEN (Authorization: Bearer).",
            )
        },
        "/health/live": {
            "get": _op(
                "Liveness, without touching dependencies",
                {"200": _resp("alive", obj)},
                tag="health",
                secured=False,
            )
        },
        "/metrics": {
            "get": _op(
                "Prometheus metrics",
                {"200": _resp("text exposition format", {"type": "string"}, "text/plain")},
                tag="health",
                secured=False,
            )
        },
        "/files": {
            "post": _op(
                "Upload a file (streamed)",
                {
                    "201": _resp(
                        "stored",
                        {
                            "type": "object",
                            "properties": {
                                "path": {"type": "string"},
                                "size": {"type": "integer"},
                                "sha256": {"type": "string"},
                            },
                        },
                    ),
                    **_errors(400, 413, 422, *AUTH_ERRORS),
                },
                tag="files",
                params=[
                    {
                        "name": "name",
                        "in": "query",
                        "schema": {"type": "string"},
                        "description": "file name (required for a raw body)",
                    }
                ],
                body={
                    "required": True,
                    "content": {
                        "application/octet-stream": {
                            "schema": {"type": "string", "format": "binary"}
                        },
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "properties": {"file": {"type": "string", "format": "binary"}},
                            }
                        },
                    },
                },
            )
        },
        "/convert": {
            "post": _op(
                "Submit a job",
                {"202": _resp("accepted", JOB), **_errors(400, 422, *AUTH_ERRORS)},
                tag="jobs",
                body=_json_body({"$ref": "#/components/schemas/ConvertRequest"}),
            )
        },
        "/jobs": {
            "get": _op(
                "List jobs",
                {
                    "200": _resp(
                        "a page of jobs",
                        {
                            "type": "object",
                            "properties": {
                                "jobs": {"type": "array", "items": JOB},
                                "total": {"type": "integer"},
                                "limit": {"type": "integer"},
                                "offset": {"type": "integer"},
                            },
                        },
                    ),
                    **_errors(422, *AUTH_ERRORS),
                },
                tag="jobs",
                params=[
                    {"name": "status", "in": "query", "schema": {"type": "string"}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "default": 50}},
                    {"name": "offset", "in": "query", "schema": {"type": "integer", "default": 0}},
                ],
            )
        },
        "/jobs/{job_id}": {
            "get": _op(
                "Job status",
                {"200": _resp("the job", JOB), **_errors(404, *AUTH_ERRORS)},
                tag="jobs",
                params=[JOB_ID],
            ),
            "delete": _op(
                "Cancel a job (a running ffmpeg stops within 2 s)",
                {
                    "200": _resp("cancelled (changed=false if it already was)", JOB),
                    **_errors(404, 409, *AUTH_ERRORS),
                },
                tag="jobs",
                params=[JOB_ID],
            ),
        },
        "/jobs/{job_id}/logs": {
            "get": _op(
                "The ffmpeg stderr tail",
                {"200": _resp("logs", obj), **_errors(404, *AUTH_ERRORS)},
                tag="jobs",
                params=[JOB_ID],
            )
        },
        "/jobs/{job_id}/output": {
            "get": _op(
                "Download an output (Range requests honoured)",
                {
                    "200": _resp(
                        "the file",
                        {"type": "string", "format": "binary"},
                        "application/octet-stream",
                    ),
                    "206": _resp("partial content"),
                    "302": {
                        "description": (
                            "s3 backend: the Location header is a presigned URL of the file,"
                            " valid for OUTPUT_URL_TTL seconds"
                        ),
                        "headers": {"Location": {"schema": {"type": "string"}}},
                    },
                    "416": _resp("range not satisfiable"),
                    **_errors(404, 409, 422, *AUTH_ERRORS),
                },
                tag="jobs",
                params=[
                    JOB_ID,
                    {
                        "name": "file",
                        "in": "query",
                        "schema": {"type": "string"},
                        "description": "one of the job's outputs by name",
                    },
                    {
                        "name": "redirect",
                        "in": "query",
                        "schema": {"type": "boolean", "default": True},
                        "description": (
                            "s3 backend: false streams the file through the API instead of"
                            " redirecting to the bucket"
                        ),
                    },
                ],
            )
        },
        "/admin/keys": {
            "post": _op(
                "Create an API key (the raw key is returned once)",
                {"201": _resp("created", obj), **_errors(422, *ADMIN_ERRORS)},
                tag="admin",
                admin=True,
                body=_json_body(
                    {
                        "type": "object",
                        "required": ["name", "user_id"],
                        "properties": {
                            "name": {"type": "string"},
                            "user_id": {"type": "string"},
                            "is_admin": {"type": "boolean"},
                            "rate_limit": {"type": "integer"},
                        },
                    }
                ),
            ),
            "get": _op(
                "List keys",
                {
                    "200": _resp(
                        "keys",
                        {
                            "type": "object",
                            "properties": {
                                "keys": {
                                    "type": "array",
                                    "items": {"$ref": "#/components/schemas/ApiKey"},
                                }
                            },
                        },
                    ),
                    **_errors(422, *ADMIN_ERRORS),
                },
                tag="admin",
                admin=True,
                params=[
                    {
                        "name": "sort",
                        "in": "query",
                        "schema": {"type": "string", "enum": ["recent", "requests", "created"]},
                    },
                    {"name": "user_id", "in": "query", "schema": {"type": "string"}},
                    {"name": "used_within_hours", "in": "query", "schema": {"type": "number"}},
                ],
            ),
        },
        "/admin/keys/{key_id}/usage": {
            "get": _op(
                "Usage of a key: requests, last use, jobs and output bytes in 24 h",
                {"200": _resp("usage", obj), **_errors(404, *ADMIN_ERRORS)},
                tag="admin",
                admin=True,
                params=[KEY_ID],
            )
        },
        "/admin/keys/{key_id}/revoke": {
            "post": _op(
                "Revoke a key",
                {"200": _resp("revoked", obj), **_errors(404, *ADMIN_ERRORS)},
                tag="admin",
                admin=True,
                params=[KEY_ID],
                body=_json_body(
                    {"type": "object", "properties": {"reason": {"type": "string"}}}, required=False
                ),
            )
        },
        "/admin/keys/{key_id}/monitor": {
            "post": _op(
                "Flag a key's requests in the access log",
                {"200": _resp("updated", obj), **_errors(404, *ADMIN_ERRORS)},
                tag="admin",
                admin=True,
                params=[KEY_ID],
                body=_json_body(
                    {"type": "object", "properties": {"enabled": {"type": "boolean"}}},
                    required=False,
                ),
            )
        },
        "/admin/users/{user_id}/rotate-keys": {
            "post": _op(
                "Revoke every key of a user and issue replacements",
                {
                    "200": _resp("rotated (new raw keys included once)", obj),
                    **_errors(*ADMIN_ERRORS),
                },
                tag="admin",
                admin=True,
                params=[
                    {
                        "name": "user_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
            )
        },
        "/admin/maintenance": {
            "get": _op(
                "Maintenance status",
                {
                    "200": _resp("status", {"$ref": "#/components/schemas/Maintenance"}),
                    **_errors(401, 403),
                },
                tag="admin",
                admin=True,
            ),
            "put": _op(
                "Turn maintenance mode on",
                {
                    "200": _resp("status", {"$ref": "#/components/schemas/Maintenance"}),
                    **_errors(422, 401, 403),
                },
                tag="admin",
                admin=True,
                body=_json_body(
                    {
                        "type": "object",
                        "properties": {
                            "ttl": {"type": "integer", "description": "seconds"},
                            "reason": {"type": "string"},
                        },
                    },
                    required=False,
                ),
                description="Admin maintenance endpoints stay reachable during maintenance so "
                "that it can be lifted.",
            ),
            "delete": _op(
                "Turn maintenance mode off",
                {
                    "200": _resp("status", {"$ref": "#/components/schemas/Maintenance"}),
                    **_errors(401, 403),
                },
                tag="admin",
                admin=True,
            ),
        },
        "/admin/ratelimit": {
            "get": _op(
                "Rate limits",
                {
                    "200": _resp("limits", {"$ref": "#/components/schemas/RateLimits"}),
                    **_errors(*ADMIN_ERRORS),
                },
                tag="admin",
                admin=True,
            ),
            "put": _op(
                "Set the global limit",
                {
                    "200": _resp("limits", {"$ref": "#/components/schemas/RateLimits"}),
                    **_errors(422, *ADMIN_ERRORS),
                },
                tag="admin",
                admin=True,
                body=_json_body(
                    {
                        "type": "object",
                        "required": ["global_per_minute"],
                        "properties": {"global_per_minute": {"type": "integer", "minimum": 0}},
                    }
                ),
            ),
        },
        "/admin/ddos": {
            "put": _op(
                "DDoS-protection mode on/off (per-client-IP limit)",
                {
                    "200": _resp("limits", {"$ref": "#/components/schemas/RateLimits"}),
                    **_errors(422, *ADMIN_ERRORS),
                },
                tag="admin",
                admin=True,
                body=_json_body(
                    {
                        "type": "object",
                        "required": ["enabled"],
                        "properties": {"enabled": {"type": "boolean"}},
                    }
                ),
            )
        },
        "/admin/stats": {
            "get": _op(
                "Job statistics by operation (count, average, p95)",
                {"200": _resp("statistics", obj), **_errors(422, *ADMIN_ERRORS)},
                tag="admin",
                admin=True,
                params=[{"name": "since_hours", "in": "query", "schema": {"type": "number"}}],
            )
        },
        "/openapi.json": {
            "get": _op("This document", {"200": _resp("OpenAPI 3", obj)}, tag="docs", secured=False)
        },
        "/docs": {
            "get": _op(
                "Readable API documentation",
                {"200": _resp("HTML", {"type": "string"}, "text/html")},
                tag="docs",
                secured=False,
            )
        },
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "FFmpeg API",
            "version": __version__,
            "description": "Self-hosted FFmpeg transcoding. Authenticate with "
            "`X-API-Key: <key>` or `Authorization: Bearer <key>`.",
        },
        "servers": [{"url": "/api/v1"}],
        "security": [{"ApiKeyHeader": []}, {"BearerKey": []}],
        "components": {
            "securitySchemes": {
                "ApiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "BearerKey": {"type": "http", "scheme": "bearer"},
            },
            "schemas": schemas,
        },
        "paths": paths,
    }


@bp.get("/openapi.json")
@public
def openapi():
    return jsonify(build_spec())


@bp.get("/docs")
@public
def docs_page():
    spec = build_spec()
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>FFmpeg API {__version__}"
        "</title><style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
        "code{background:#eee;padding:0 .2em}h3{margin-bottom:.2em}"
        ".m{font-weight:bold;text-transform:uppercase}</style></head><body>",
        f"<h1>FFmpeg API {__version__}</h1><p>{html.escape(spec['info']['description'])}"
        "</p><p>Machine-readable: <a href='/api/v1/openapi.json'>/api/v1/openapi.json</a>"
        "</p>",
    ]
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            admin = " (admin key)" if op.get("x-admin-only") else ""
            auth = "" if op.get("security") == [] else " — needs a key"
            parts.append(
                f"<h3><span class='m'>{method}</span> <code>/api/v1{html.escape(path)}"
                f"</code></h3><p>{html.escape(op['summary'])}{auth}{admin}</p>"
            )
            codes = ", ".join(sorted(op["responses"]))
            parts.append(f"<p>Responses: {codes}</p>")
    parts.append("<h2>Operations</h2>")
    for name, schema in OPERATION_SCHEMAS.items():
        props = ", ".join(f"<code>{html.escape(k)}</code>" for k in schema.get("properties", {}))
        parts.append(f"<h3>{html.escape(name)}</h3><p>{props}</p>")
    parts.append("</body></html>")
    return Response("".join(parts), mimetype="text/html")
