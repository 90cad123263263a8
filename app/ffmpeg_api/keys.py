"""API keys: generated once, stored only as a SHA-256 hash, compared in constant time.

A raw key looks like `fk_<id>_<secret>`. The id is public (it is what logs and the admin CLI
show); the secret is 32 random bytes, so a fast hash is enough: there is nothing to brute-force.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

import psycopg

from .errors import NotFound, Unauthorized, ValidationError

KEY_RE = re.compile(r"^fk_([a-z0-9]{12})_([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True)
class Principal:
    key_id: str
    key_hash: str
    user_id: str
    name: str
    is_admin: bool
    rate_limit: int | None
    monitored: bool


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def generate() -> tuple[str, str]:
    key_id = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(12))
    return key_id, f"fk_{key_id}_{secrets.token_urlsafe(32)}"


def _public(row: dict) -> dict:
    out = {
        k: row[k]
        for k in (
            "id",
            "name",
            "user_id",
            "is_admin",
            "rate_limit",
            "monitored",
            "created_at",
            "revoked_at",
            "revoked_reason",
            "last_used_at",
            "request_count",
        )
        if k in row
    }
    out["active"] = row.get("revoked_at") is None
    return out


def create(
    conn: psycopg.Connection,
    *,
    name: str,
    user_id: str,
    is_admin: bool = False,
    rate_limit: int | None = None,
) -> tuple[dict, str]:
    if not name or not user_id:
        raise ValidationError("name and user_id are required", field="name")
    if rate_limit is not None and rate_limit < 0:
        raise ValidationError("rate_limit must be >= 0", field="rate_limit")
    key_id, raw = generate()
    row = conn.execute(
        "INSERT INTO api_keys (id, key_hash, name, user_id, is_admin, rate_limit)"
        " VALUES (%s, %s, %s, %s, %s, %s) RETURNING *",
        (key_id, hash_key(raw), name, user_id, is_admin, rate_limit),
    ).fetchone()
    return _public(row), raw


def authenticate(conn: psycopg.Connection, raw: str | None) -> Principal:
    """Resolve a raw key and count its use, in one round trip for the common case."""
    if not raw:
        raise Unauthorized("missing API key: send X-API-Key or Authorization: Bearer")
    match = KEY_RE.match(raw)
    if not match:
        raise Unauthorized("invalid API key")
    # Usage counters are not worth an fsync on every request.
    conn.execute("SET LOCAL synchronous_commit = off")
    row = conn.execute(
        "UPDATE api_keys SET request_count = request_count + 1, last_used_at = now()"
        " WHERE id = %s AND revoked_at IS NULL"
        " RETURNING id, key_hash, user_id, name, is_admin, rate_limit, monitored",
        (match.group(1),),
    ).fetchone()
    if row is None or not hmac.compare_digest(row["key_hash"], hash_key(raw)):
        conn.rollback()
        raise Unauthorized("invalid API key")
    conn.commit()
    return Principal(
        row["id"],
        row["key_hash"],
        row["user_id"],
        row["name"],
        row["is_admin"],
        row["rate_limit"],
        row["monitored"],
    )


SORTS = {
    "recent": "last_used_at DESC NULLS LAST, request_count DESC",
    "requests": "request_count DESC, last_used_at DESC NULLS LAST",
    "created": "created_at DESC",
}


def list_keys(
    conn: psycopg.Connection,
    *,
    sort: str = "recent",
    user_id: str | None = None,
    used_within_hours: float | None = None,
    include_revoked: bool = True,
) -> list[dict]:
    if sort not in SORTS:
        raise ValidationError(f"sort must be one of {', '.join(SORTS)}", field="sort")
    where, params = [], []
    if user_id:
        where.append("user_id = %s")
        params.append(user_id)
    if used_within_hours is not None:
        where.append("last_used_at > now() - make_interval(secs => %s)")
        params.append(used_within_hours * 3600)
    if not include_revoked:
        where.append("revoked_at IS NULL")
    sql = "SELECT * FROM api_keys"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY {SORTS[sort]}"
    return [_public(r) for r in conn.execute(sql, params)]


def get(conn: psycopg.Connection, key_id: str) -> dict:
    row = conn.execute("SELECT * FROM api_keys WHERE id = %s", (key_id,)).fetchone()
    if row is None:
        raise NotFound(f"no API key with id {key_id!r}")
    return row


def usage(conn: psycopg.Connection, key_id: str) -> dict:
    row = get(conn, key_id)
    stats = conn.execute(
        "SELECT count(*) AS jobs_24h, coalesce(sum(output_size), 0) AS output_bytes_24h,"
        " count(*) FILTER (WHERE status = 'failed') AS failed_jobs_24h"
        " FROM jobs WHERE api_key_id = %s AND created_at > now() - interval '24 hours'",
        (key_id,),
    ).fetchone()
    return {
        **_public(row),
        "jobs_24h": stats["jobs_24h"],
        "output_bytes_24h": int(stats["output_bytes_24h"]),
        "failed_jobs_24h": stats["failed_jobs_24h"],
    }


def revoke(
    conn: psycopg.Connection, key_id: str, *, reason: str = "", dry_run: bool = False
) -> dict:
    row = get(conn, key_id)
    if row["revoked_at"] is not None:
        return {"key": _public(row), "changed": False}
    if dry_run:
        return {"key": _public(row), "changed": True}
    row = conn.execute(
        "UPDATE api_keys SET revoked_at = now(), revoked_reason = %s WHERE id = %s RETURNING *",
        (reason or None, key_id),
    ).fetchone()
    return {"key": _public(row), "changed": True}


def rotate_user(
    conn: psycopg.Connection, user_id: str, *, dry_run: bool = False, reason: str = "rotated"
) -> dict:
    """Revoke every active key of a user and issue a replacement for each (same name, rights)."""
    active = conn.execute(
        "SELECT * FROM api_keys WHERE user_id = %s AND revoked_at IS NULL ORDER BY created_at"
        " FOR UPDATE",
        (user_id,),
    ).fetchall()
    if dry_run:
        return {
            "user_id": user_id,
            "changed": bool(active),
            "revoked": [_public(r) for r in active],
            "created": [],
        }
    created = []
    for old in active:
        conn.execute(
            "UPDATE api_keys SET revoked_at = now(), revoked_reason = %s WHERE id = %s",
            (reason, old["id"]),
        )
        new, raw = create(
            conn,
            name=old["name"],
            user_id=user_id,
            is_admin=old["is_admin"],
            rate_limit=old["rate_limit"],
        )
        created.append({**new, "key": raw, "replaces": old["id"]})
    return {
        "user_id": user_id,
        "changed": bool(active),
        "revoked": [_public(r) for r in active],
        "created": created,
    }


def set_monitored(
    conn: psycopg.Connection, key_id: str, monitored: bool, *, dry_run: bool = False
) -> dict:
    row = get(conn, key_id)
    changed = row["monitored"] != monitored
    if changed and not dry_run:
        row = conn.execute(
            "UPDATE api_keys SET monitored = %s WHERE id = %s RETURNING *", (monitored, key_id)
        ).fetchone()
    return {"key": _public(row), "changed": changed}
