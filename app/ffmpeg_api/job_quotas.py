"""Quotas on what one client may have the workers do: active jobs and encoded output per day.

Counted with SQL on the jobs table (PostgreSQL is the source of truth), at submission, in the
transaction that inserts the job. A per-user advisory lock taken in that transaction makes two
submissions of the same user wait for each other, so they cannot both see room for one job:

    MAX_ACTIVE_JOBS_PER_KEY / MAX_ACTIVE_JOBS_PER_USER  queued + processing jobs
    OUTPUT_SECONDS_PER_DAY                              encoded output-seconds (the plan's
        encoding steps: duration x outputs, an HLS rung each) of the user's jobs created in the
        last 24 h, except jobs cancelled before they started

0 disables a quota. Admin keys (operations) and submissions without a key (the admin CLI) are
not counted against.
"""

from __future__ import annotations

import math

import psycopg

from .errors import ApiError
from .keys import Principal
from .settings import Settings

#: First key of the two-key advisory lock (the second is the user's hash); any constant that
#: no other lock of the service uses.
QUOTA_LOCK_CLASS = 0x51554F54  # "QUOT"
DAY_SECONDS = 86400


class QuotaExceeded(ApiError):
    status = 429
    code = "quota_exceeded"


class TooManyActiveJobs(QuotaExceeded):
    code = "too_many_active_jobs"


class OutputQuotaExceeded(QuotaExceeded):
    code = "output_quota_exceeded"


class JobOverDailyQuota(ApiError):
    """A job bigger than the whole daily quota: waiting would not help (422, not 429)."""

    status = 422
    code = "output_quota_exceeded"


def counted(principal: Principal | None) -> bool:
    return principal is not None and not principal.is_admin


def lock_user(conn: psycopg.Connection, user_id: str) -> None:
    """Serialise this user's submissions until the current transaction ends."""
    conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (QUOTA_LOCK_CLASS, user_id))


def active_jobs(conn: psycopg.Connection, principal: Principal) -> tuple[int, int]:
    """(the key's, the user's) queued + processing jobs."""
    row = conn.execute(
        "SELECT count(*) FILTER (WHERE api_key_id = %s) AS key_jobs, count(*) AS user_jobs"
        " FROM jobs WHERE user_id = %s AND status IN ('queued', 'processing')",
        (principal.key_id, principal.user_id),
    ).fetchone()
    return int(row["key_jobs"]), int(row["user_jobs"])


# Jobs that count against the day: every job of the user created in the last 24 h, except
# those cancelled before a worker started them (they cost nothing). Rows from before
# output_seconds existed count their input's duration.
_USED_TODAY = (
    "SELECT coalesce(sum(coalesce(output_seconds, input_duration, 0)), 0) AS used FROM jobs"
    " WHERE user_id = %(user)s AND created_at > now() - make_interval(secs => %(day)s)"
    " AND NOT (status = 'cancelled' AND started_at IS NULL)"
)
# When the oldest of those jobs, in order, have freed `needed` seconds by leaving the window.
_FREED_AT = (
    "SELECT extract(epoch FROM created_at + make_interval(secs => %(day)s) - now()) AS wait"
    " FROM (SELECT created_at, sum(coalesce(output_seconds, input_duration, 0))"
    "   OVER (ORDER BY created_at, id) AS freed FROM jobs"
    "   WHERE user_id = %(user)s AND created_at > now() - make_interval(secs => %(day)s)"
    "   AND NOT (status = 'cancelled' AND started_at IS NULL)) AS w"
    " WHERE freed >= %(needed)s ORDER BY created_at LIMIT 1"
)


def output_seconds_today(conn: psycopg.Connection, user_id: str) -> float:
    row = conn.execute(_USED_TODAY, {"user": user_id, "day": DAY_SECONDS}).fetchone()
    return float(row["used"])


def seconds_until_free(conn: psycopg.Connection, user_id: str, needed: float) -> int | None:
    """Seconds until jobs leaving the 24 h window free `needed` output-seconds, or None."""
    row = conn.execute(
        _FREED_AT, {"user": user_id, "day": DAY_SECONDS, "needed": needed}
    ).fetchone()
    if row is None:
        return None
    return max(1, math.ceil(float(row["wait"])))


def admit(
    conn: psycopg.Connection,
    settings: Settings,
    principal: Principal | None,
    output_seconds: float,
) -> None:
    """Raise a 429 if this submission would take the key or user over a quota.

    Call inside the transaction that inserts the job (the lock is held until it ends)."""
    if not counted(principal):
        return
    limits = (
        settings.max_active_jobs_per_key,
        settings.max_active_jobs_per_user,
        settings.output_seconds_per_day,
    )
    if not any(limit > 0 for limit in limits):
        return
    lock_user(conn, principal.user_id)
    key_jobs, user_jobs = active_jobs(conn, principal)
    if 0 < settings.max_active_jobs_per_key <= key_jobs:
        raise TooManyActiveJobs(
            f"this API key has {key_jobs} queued or processing jobs; the limit is "
            f"{settings.max_active_jobs_per_key} (MAX_ACTIVE_JOBS_PER_KEY): wait for one to "
            "finish or cancel one"
        )
    if 0 < settings.max_active_jobs_per_user <= user_jobs:
        raise TooManyActiveJobs(
            f"user {principal.user_id!r} has {user_jobs} queued or processing jobs; the limit "
            f"is {settings.max_active_jobs_per_user} (MAX_ACTIVE_JOBS_PER_USER): wait for one "
            "to finish or cancel one"
        )
    admit_output(conn, settings, principal.user_id, output_seconds)


def admit_output(
    conn: psycopg.Connection, settings: Settings, user_id: str, output_seconds: float
) -> None:
    """Raise a 429 if `output_seconds` more would take the user over the daily output quota
    (at submission, and in the worker for a URL input planned only once fetched)."""
    limit = settings.output_seconds_per_day
    if limit <= 0:
        return
    if output_seconds > limit:
        raise JobOverDailyQuota(
            f"this job encodes {output_seconds:.0f} output-seconds, more than the daily quota "
            f"of {limit:g} (OUTPUT_SECONDS_PER_DAY) on its own: trim it or split it",
            field="operations",
        )
    used = output_seconds_today(conn, user_id)
    if used + output_seconds > limit:
        wait = seconds_until_free(conn, user_id, used + output_seconds - limit)
        raise OutputQuotaExceeded(
            f"user {user_id!r} has used {used:.0f} of {limit:g} encoded "
            f"output-seconds in the last 24 h (OUTPUT_SECONDS_PER_DAY); this job needs "
            f"{output_seconds:.0f}",
            headers={"Retry-After": str(wait)} if wait else None,
        )
