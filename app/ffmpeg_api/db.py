"""PostgreSQL access: one connection pool per process, and versioned SQL migrations.

Pools are created lazily and re-created after a fork (gunicorn and RQ both fork), because a
libpq connection must never be shared between processes.

Every connection has a bounded connect timeout (`DEFAULT_CONNECT_TIMEOUT`, unless the URL's
`connect_timeout` or PGCONNECT_TIMEOUT says otherwise): libpq's own default is to wait
indefinitely (psycopg: 130 s) for a host that does not answer.

Transactions: one rule, whoever holds the connection
----------------------------------------------------
**The domain function commits.** A function of keys, jobs, ownership, housekeeping ... that
writes is one unit of work: its statements run in `atomic(conn)` -- all or none -- and are
committed when it returns, before any side effect outside PostgreSQL that must see them
(`jobs.create` enqueues the job only after its row is committed, `jobs.cancel` sets the
worker's cancel flag only after the row says cancelled). It is the domain function that knows
where that point is, which is why the rule is not "the caller commits".

Callers -- API routes, CLI commands, the worker -- therefore never call `commit()` or
`rollback()` around a domain function, and never run one inside a transaction block of their
own (`atomic` refuses to: its commit would end the caller's block). An operation that must be
atomic across several steps is one domain function (`keys.rotate_user`: revoke N keys, issue
N). Steps that only ever run inside another function's unit of work are helpers and do not
commit: `keys._insert`, `job_quotas.admit`, `storage_quota.lock_user`/`confirm`,
`ownership.record_upload`. Reads need no transaction of their own.

The rule gives the same answer on both kinds of connection this module hands out:
- the pool's (`get_pool`, `transaction`; what the API uses) are autocommit: a statement
  outside a transaction block is committed on its own, so several statements are atomic only
  inside `conn.transaction()`, which opens a real BEGIN ... COMMIT;
- `connect()`'s (CLI, worker) are not: the first statement opens an implicit transaction that
  lasts until `commit()`, and `conn.transaction()` inside it is only a savepoint.
`atomic` covers both: a block that is all-or-nothing and committed when it exits.

`transaction(url)` is for code that runs its own SQL on a pooled connection (health checks,
metrics): a transaction block, committed on success, rolled back on any exception.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from importlib import resources

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

# Any constant works; it only has to be the same for every process migrating this database.
MIGRATION_LOCK_ID = 0x46464D50  # "FFMP"

# Seconds to establish a connection (libpq's minimum is 2). A refused connection fails at once
# anyway; this bounds a host that drops packets (down, partitioned, firewalled).
DEFAULT_CONNECT_TIMEOUT = 2

# How long the pool retries a connection it could not make before it gives up; the next
# request that finds the pool empty then starts a fresh attempt at once. psycopg's default,
# 5 minutes with backoff 1 s, 2 s, 4 s ..., made the API come back up to minutes after
# PostgreSQL did (22 s after a 40 s outage), each process on its own schedule. At 0.5 s an
# attempt is at most half a second away, less than a request waits (DATABASE_POOL_TIMEOUT,
# 1 s): the first request after PostgreSQL is back gets a connection.
RECONNECT_TIMEOUT = 0.5


def with_connect_timeout(url: str) -> str:
    """`url`, with DEFAULT_CONNECT_TIMEOUT unless it (or PGCONNECT_TIMEOUT) sets one."""
    if "connect_timeout" in conninfo_to_dict(url) or os.environ.get("PGCONNECT_TIMEOUT"):
        return url
    return make_conninfo(url, connect_timeout=DEFAULT_CONNECT_TIMEOUT)


_pools: dict[tuple[str, int], tuple[int, ConnectionPool]] = {}
_pools_lock = threading.Lock()


def _reset_after_fork() -> None:
    global _pools_lock
    _pools_lock = threading.Lock()


os.register_at_fork(after_in_child=_reset_after_fork)


def get_pool(url: str, max_size: int = 10) -> ConnectionPool:
    key = (url, max_size)
    pid = os.getpid()
    with _pools_lock:
        entry = _pools.get(key)
        if entry is not None and entry[0] == pid:
            return entry[1]
        # Inherited from a parent process: forget it without closing the parent's sockets.
        pool: ConnectionPool | None = None

        def check(conn: psycopg.Connection) -> None:
            try:
                ConnectionPool.check_connection(conn)
            except Exception:
                # One dead connection means a restart most likely killed them all: drop the
                # idle ones now. Checked one by one, the pool would back off 1 s after the
                # second failure, longer than a request waits (DATABASE_POOL_TIMEOUT).
                if pool is not None:
                    pool.drain()
                raise

        pool = ConnectionPool(
            with_connect_timeout(url),
            min_size=1,
            max_size=max(1, max_size),
            # Autocommit: a read costs one round trip, not three (BEGIN is implicit, but the
            # ROLLBACK that ends it is not). Writes that must be atomic run in `atomic(conn)`
            # or `transaction()` (the module docstring: who commits).
            kwargs={"row_factory": dict_row, "autocommit": True},
            # A PostgreSQL restart (a runbook's restore, PITR, a config change) kills every
            # pooled connection; checking one before handing it out costs a round trip but
            # turns what would be a failed request into a reconnect.
            check=check,
            reconnect_timeout=RECONNECT_TIMEOUT,
            open=True,
            name=f"ffmpeg-api-{pid}",
        )
        _pools[key] = (pid, pool)
        return pool


def close_pools() -> None:
    with _pools_lock:
        for pid, pool in _pools.values():
            if pid == os.getpid():
                pool.close()
        _pools.clear()


@contextmanager
def transaction(url: str, max_size: int = 10, timeout: float = 10.0):
    """A pooled connection in a transaction: committed on success, rolled back on any
    exception. (The pool's connections are autocommit, so without the block each statement
    would commit on its own and an exception would undo nothing.)"""
    pool = get_pool(url, max_size)
    with pool.connection(timeout=timeout) as conn, conn.transaction():
        yield conn


@contextmanager
def atomic(conn: psycopg.Connection):
    """One domain function's writes: all of them or none, committed when the block exits.

    On an autocommit (pooled) connection, or on a `connect()` one with no transaction open,
    this is BEGIN ... COMMIT. On a `connect()` connection whose caller has already run a
    statement (an implicit transaction is open, holding reads only, by the rule), the writes
    are a savepoint and the commit that follows ends the whole transaction -- as the bare
    `conn.commit()` of a domain function always did. Inside a caller's own transaction block
    psycopg refuses the commit (ProgrammingError), and the block rolls back: a domain
    function is not composed into a bigger transaction (the module docstring).
    """
    with conn.transaction():
        yield conn
    if conn.info.transaction_status != TransactionStatus.IDLE:
        conn.commit()


def connect(url: str) -> psycopg.Connection:
    """A standalone connection for short-lived processes (CLI, worker horses)."""
    return psycopg.connect(with_connect_timeout(url), row_factory=dict_row, autocommit=False)


def available_migrations() -> list[tuple[str, str]]:
    files = resources.files("ffmpeg_api") / "migrations"
    found = sorted(p.name for p in files.iterdir() if p.name.endswith(".sql"))
    return [(name.removesuffix(".sql"), (files / name).read_text()) for name in found]


def applied_migrations(conn: psycopg.Connection) -> set[str]:
    exists = conn.execute("SELECT to_regclass('public.schema_migrations') AS t").fetchone()["t"]
    if exists is None:
        return set()
    return {r["version"] for r in conn.execute("SELECT version FROM schema_migrations")}


def pending_migrations(url: str) -> list[str]:
    with connect(url) as conn:
        done = applied_migrations(conn)
    return [version for version, _ in available_migrations() if version not in done]


def upgrade(url: str, *, dry_run: bool = False) -> list[str]:
    """Apply pending migrations in order, each in its own transaction, under an advisory lock
    so that concurrent deploys on several hosts apply each migration exactly once."""
    if dry_run:
        return pending_migrations(url)
    applied: list[str] = []
    with psycopg.connect(with_connect_timeout(url), row_factory=dict_row, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_ID,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = applied_migrations(conn)
            for version, sql in available_migrations():
                if version in done:
                    continue
                with conn.transaction():
                    conn.execute(sql)
                    conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
                applied.append(version)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_ID,))
    return applied
