"""Who may use a storage path: the one rule of tenancy, keyed on the path relative to the root.

- `uploads/<id>/<name>` belongs to the user recorded in the `uploads` table when it was uploaded;
- `output/<job id>/...` belongs to that job's user;
- anything else (files put there by hand, uploads from before the table existed, tmp/) has no
  owner.

A path is usable by its owner and by admin keys; a path with no owner by admin keys only. The
rule is keyed on the relative path, not on the local filesystem, so object keys of a remote
store can follow it unchanged.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import psycopg

from .keys import Principal


@dataclass(frozen=True)
class Requester:
    """Whoever asks to read a path: an API key's user, or a job's (who submitted it)."""

    user_id: str | None
    is_admin: bool

    @classmethod
    def of(cls, principal: Principal | None) -> Requester:
        # No principal: the service itself (the admin CLI, a job created without a key).
        if principal is None:
            return cls(user_id=None, is_admin=True)
        return cls(user_id=principal.user_id, is_admin=principal.is_admin)


def owner_of(conn: psycopg.Connection, relpath: str) -> str | None:
    """The user a storage path belongs to, or None when nothing records an owner."""
    parts = relpath.split("/")
    if len(parts) < 3 or any(p in ("", ".", "..") for p in parts):
        return None
    area = parts[0]
    if area == "uploads":
        row = conn.execute("SELECT user_id FROM uploads WHERE path = %s", (relpath,)).fetchone()
        return _column(row, "user_id")
    if area == "output":
        try:
            job_id = str(uuid.UUID(parts[1]))
        except ValueError:
            return None
        if parts[1] != job_id:  # output/<job id>/ is always the canonical spelling
            return None
        row = conn.execute("SELECT user_id FROM jobs WHERE id = %s", (job_id,)).fetchone()
        return _column(row, "user_id")
    return None


def may_use(conn: psycopg.Connection, relpath: str, requester: Requester) -> bool:
    if requester.is_admin:
        return True
    owner = owner_of(conn, relpath)
    return owner is not None and owner == requester.user_id


class PathNotUsable(Exception):
    """A job names a path its submitter may not read (the worker's re-check)."""


def require_usable(conn: psycopg.Connection, relpath: str, requester: Requester, what: str):
    if not may_use(conn, relpath, requester):
        raise PathNotUsable(f"{what} {relpath} is not usable by the user who submitted the job")


def job_requester(conn: psycopg.Connection, row: dict) -> Requester:
    """The requester a job acts for: the user and admin flag of the key that submitted it."""
    if row.get("api_key_id") is None and row.get("user_id") is None:
        return Requester.of(None)
    admin = conn.execute(
        "SELECT is_admin FROM api_keys WHERE id = %s", (row.get("api_key_id"),)
    ).fetchone()
    return Requester(user_id=row.get("user_id"), is_admin=bool(_column(admin, "is_admin")))


def record_upload(
    conn: psycopg.Connection,
    *,
    path: str,
    user_id: str,
    api_key_id: str | None,
    size: int,
    sha256: str,
    probe: dict | None = None,
    version: str | None = None,
) -> None:
    from psycopg.types.json import Jsonb

    conn.execute(
        "INSERT INTO uploads (path, user_id, api_key_id, size, sha256, probe, version)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (path, user_id, api_key_id, size, sha256, Jsonb(probe) if probe else None, version),
    )


def _column(row, name: str):
    if row is None:
        return None
    return row[name] if isinstance(row, dict) else row[0]
