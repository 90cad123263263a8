"""API keys: generated once, stored only as a SHA-256 hash, compared in constant time.

A raw key looks like `fk_<id>_<secret>`. The id is public (it is what logs and the admin CLI
show); the secret is 32 random bytes, so a fast hash is enough: there is nothing to brute-force.

Every function here that writes commits its writes before it returns, in one `db.atomic`
block (db.py: the domain function commits); callers do not commit.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

import psycopg

from .db import atomic
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
    with atomic(conn):
        return _insert(conn, name=name, user_id=user_id, is_admin=is_admin, rate_limit=rate_limit)


def _insert(
    conn: psycopg.Connection, *, name: str, user_id: str, is_admin: bool, rate_limit: int | None
) -> tuple[dict, str]:
    """Write one new key (a helper: it runs inside its caller's `atomic` block)."""
    key_id, raw = generate()
    row = conn.execute(
        "INSERT INTO api_keys (id, key_hash, name, user_id, is_admin, rate_limit)"
        " VALUES (%s, %s, %s, %s, %s, %s) RETURNING *",
        (key_id, hash_key(raw), name, user_id, is_admin, rate_limit),
    ).fetchone()
    return _public(row), raw


# Usage is counted in Redis on every request (no database write on the hot path) and folded
# into PostgreSQL by `flush_usage`, which the API runs every few seconds and before any listing.
USAGE_COUNT_KEY = "ffmpeg_api:usage:count"
USAGE_LAST_KEY = "ffmpeg_api:usage:last"
USAGE_FLUSH_LOCK = "ffmpeg_api:usage:flush_lock"
# Bumped on every change to a key, so API processes drop their cached principals at once.
EPOCH_KEY = "ffmpeg_api:keys:epoch"


def authenticate(conn: psycopg.Connection, raw: str | None) -> Principal:
    """Resolve a raw key to its principal (the secret compared in constant time)."""
    if not raw:
        raise Unauthorized("missing API key: send X-API-Key or Authorization: Bearer")
    match = KEY_RE.match(raw)
    if not match:
        raise Unauthorized("invalid API key")
    row = conn.execute(
        "SELECT id, key_hash, user_id, name, is_admin, rate_limit, monitored FROM api_keys"
        " WHERE id = %s AND revoked_at IS NULL",
        (match.group(1),),
    ).fetchone()
    if row is None or not hmac.compare_digest(row["key_hash"], hash_key(raw)):
        raise Unauthorized("invalid API key")
    return Principal(
        row["id"],
        row["key_hash"],
        row["user_id"],
        row["name"],
        row["is_admin"],
        row["rate_limit"],
        row["monitored"],
    )


def bump_epoch(redis_conn) -> None:
    import uuid

    redis_conn.set(EPOCH_KEY, uuid.uuid4().hex)


def flush_usage(conn: psycopg.Connection, redis_conn) -> int:
    """Fold the Redis usage counters into api_keys; returns the keys updated.

    The counters are renamed away first (atomically), so requests counted meanwhile land in
    fresh hashes and nothing is counted twice. Hashes of keys that failed verification match
    no row and are dropped.
    """
    import uuid

    suffix = uuid.uuid4().hex
    moved = []
    for key in (USAGE_COUNT_KEY, USAGE_LAST_KEY):
        try:
            redis_conn.rename(key, f"{key}:flushing:{suffix}")
            moved.append(key)
        except Exception as exc:  # "no such key": nothing was counted
            if "no such key" not in str(exc).lower():
                raise
    if not moved:
        return 0
    counts = redis_conn.hgetall(f"{USAGE_COUNT_KEY}:flushing:{suffix}")
    lasts = redis_conn.hgetall(f"{USAGE_LAST_KEY}:flushing:{suffix}")
    rows = [(h.decode(), int(n), float(lasts.get(h, 0) or 0) or None) for h, n in counts.items()]
    updated = 0
    if rows:
        with atomic(conn), conn.cursor() as cur:
            cur.executemany(
                "UPDATE api_keys SET request_count = request_count + %s,"
                " last_used_at = greatest(last_used_at, to_timestamp(%s))"
                " WHERE key_hash = %s",
                [(n, ts, h) for h, n, ts in rows],
            )
            updated = len(rows)
    redis_conn.delete(f"{USAGE_COUNT_KEY}:flushing:{suffix}", f"{USAGE_LAST_KEY}:flushing:{suffix}")
    return updated


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
    with atomic(conn):
        row = conn.execute(
            "UPDATE api_keys SET revoked_at = now(), revoked_reason = %s WHERE id = %s RETURNING *",
            (reason or None, key_id),
        ).fetchone()
    return {"key": _public(row), "changed": True}


def rotate_user(
    conn: psycopg.Connection,
    user_id: str,
    *,
    dry_run: bool = False,
    reason: str = "rotated",
    created_before=None,
) -> dict:
    """Revoke every active key of a user and issue a replacement for each (same name, rights).

    With `created_before` (a timezone-aware datetime) only keys issued before that moment are
    replaced: the replacements are issued after it, so rotating again with the same cutoff
    finds nothing to do -- which is what makes a remediation safe to run twice.
    """
    # One unit of work: either every key of the user is replaced, or none is.
    with atomic(conn):
        active = conn.execute(
            "SELECT * FROM api_keys WHERE user_id = %s AND revoked_at IS NULL"
            " AND (%s::timestamptz IS NULL OR created_at < %s::timestamptz)"
            " ORDER BY created_at FOR UPDATE",
            (user_id, created_before, created_before),
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
            new, raw = _insert(
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
        with atomic(conn):
            row = conn.execute(
                "UPDATE api_keys SET monitored = %s WHERE id = %s RETURNING *",
                (monitored, key_id),
            ).fetchone()
    return {"key": _public(row), "changed": changed}
