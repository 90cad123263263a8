"""Admin endpoints: API keys, maintenance mode, rate limits, job statistics.

The routes do not commit: each keys.* call commits its own writes (db.py: who commits), so
the epoch is bumped only after the change is visible to every process."""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from .. import control, jobs, keys
from ..errors import ValidationError
from .params import body_int, query_hours
from .pipeline import admin_during_maintenance, admin_only, db, json_body, redis_conn, settings

bp = Blueprint("admin", __name__)


def _optional_body() -> dict:
    return json_body(optional=True)


@bp.post("/admin/keys")
@admin_only
def create_key():
    body = json_body()
    unknown = sorted(set(body) - {"name", "user_id", "is_admin", "rate_limit"})
    if unknown:
        raise ValidationError(f"unknown field(s): {', '.join(unknown)}", field=unknown[0])
    for field in ("name", "user_id"):
        if not isinstance(body.get(field), str) or not body[field].strip():
            raise ValidationError(f"{field} must be a non-empty string", field=field)
    is_admin = body.get("is_admin", False)
    if not isinstance(is_admin, bool):
        raise ValidationError("is_admin must be a boolean", field="is_admin")
    key, raw = keys.create(
        db(),
        name=body["name"].strip(),
        user_id=body["user_id"].strip(),
        is_admin=is_admin,
        rate_limit=body_int(body, "rate_limit"),
    )
    response = jsonify(
        {
            **key,
            "api_key": raw,
            "note": "store this key now: it is shown once and kept only as a hash",
        }
    )
    response.status_code = 201
    return response


@bp.get("/admin/keys")
@admin_only
def list_keys():
    hours = query_hours("used_within_hours", None)
    keys.flush_usage(db(), redis_conn())
    rows = keys.list_keys(
        db(),
        sort=request.args.get("sort", "recent"),
        user_id=request.args.get("user_id"),
        used_within_hours=hours,
    )
    return jsonify({"keys": rows})


@bp.get("/admin/keys/<key_id>/usage")
@admin_only
def key_usage(key_id: str):
    keys.flush_usage(db(), redis_conn())
    return jsonify(keys.usage(db(), key_id))


@bp.post("/admin/keys/<key_id>/revoke")
@admin_only
def revoke_key(key_id: str):
    body = _optional_body()
    outcome = keys.revoke(db(), key_id, reason=str(body.get("reason", "")))
    keys.bump_epoch(redis_conn())
    return jsonify(outcome)


@bp.post("/admin/keys/<key_id>/monitor")
@admin_only
def monitor_key(key_id: str):
    body = _optional_body()
    enabled = body.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ValidationError("enabled must be a boolean", field="enabled")
    outcome = keys.set_monitored(db(), key_id, enabled)
    keys.bump_epoch(redis_conn())
    return jsonify(outcome)


@bp.post("/admin/users/<user_id>/rotate-keys")
@admin_only
def rotate_user(user_id: str):
    outcome = keys.rotate_user(db(), user_id)
    keys.bump_epoch(redis_conn())
    return jsonify(outcome)


@bp.get("/admin/maintenance")
@admin_during_maintenance
def maintenance_get():
    return jsonify(control.maintenance_status(redis_conn()))


@bp.put("/admin/maintenance")
@admin_during_maintenance
def maintenance_put():
    body = _optional_body()
    ttl = body_int(body, "ttl", minimum=1)
    reason = body.get("reason", "")
    if not isinstance(reason, str):
        raise ValidationError("reason must be a string", field="reason")
    return jsonify(control.maintenance_on(redis_conn(), reason=reason, ttl=ttl))


@bp.delete("/admin/maintenance")
@admin_during_maintenance
def maintenance_delete():
    return jsonify(control.maintenance_off(redis_conn()))


@bp.get("/admin/ratelimit")
@admin_only
def ratelimit_get():
    s = settings()
    conn = redis_conn()
    return jsonify(
        {
            "global_per_minute": control.global_limit(conn, s.global_rate_limit_per_minute),
            "per_key_default_per_minute": s.rate_limit_per_minute,
            "ddos_protection": control.ddos_enabled(conn),
            "ddos_ip_per_minute": s.ddos_ip_rate_limit_per_minute,
        }
    )


@bp.put("/admin/ratelimit")
@admin_only
def ratelimit_put():
    body = json_body()
    limit = body_int(body, "global_per_minute", required=True)
    control.set_global_limit(redis_conn(), limit)
    return ratelimit_get()


@bp.put("/admin/ddos")
@admin_only
def ddos_put():
    body = json_body()
    enabled = body.get("enabled")
    if not isinstance(enabled, bool):
        raise ValidationError("enabled must be a boolean", field="enabled")
    control.set_ddos(redis_conn(), enabled)
    return ratelimit_get()


@bp.get("/admin/stats")
@admin_only
def job_stats():
    return jsonify(jobs.stats(db(), since_hours=query_hours("since_hours", 24.0)))
