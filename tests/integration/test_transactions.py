"""Transactions mean one thing on every connection: the API's pooled (autocommit) ones and the
CLI's and worker's (db.connect). A key rotation that fails halfway leaves the user's old keys
exactly as they were, through the API as through the CLI; db.transaction() commits or rolls
back; a domain function's writes are committed when it returns (db.py's rule)."""

import psycopg
import pytest

from ffmpeg_api import db as dbmod
from ffmpeg_api import keys as keymod


def _user_keys(settings, user):
    with psycopg.connect(settings.database_url) as conn:
        return conn.execute(
            "SELECT id, revoked_at FROM api_keys WHERE user_id = %s ORDER BY id", (user,)
        ).fetchall()


@pytest.fixture
def fail_second_insert(settings):
    """PostgreSQL itself refuses the second api_keys insert once this is installed: the first
    replacement key is written and one old key revoked before the rotation breaks."""
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute("CREATE SEQUENCE IF NOT EXISTS test_tx_inserts")
        conn.execute("SELECT setval('test_tx_inserts', 1, false)")
        conn.execute(
            "CREATE OR REPLACE FUNCTION test_tx_fail_second() RETURNS trigger AS $$"
            " BEGIN IF nextval('test_tx_inserts') = 2 THEN"
            " RAISE EXCEPTION 'injected failure in the second insert'; END IF;"
            " RETURN NEW; END $$ LANGUAGE plpgsql"
        )
        conn.execute(
            "CREATE TRIGGER test_tx_fail_second BEFORE INSERT ON api_keys"
            " FOR EACH ROW EXECUTE FUNCTION test_tx_fail_second()"
        )
    try:
        yield
    finally:
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            conn.execute("DROP TRIGGER IF EXISTS test_tx_fail_second ON api_keys")
            conn.execute("DROP FUNCTION IF EXISTS test_tx_fail_second()")
            conn.execute("DROP SEQUENCE IF EXISTS test_tx_inserts")


@pytest.fixture
def fail_second_key_write(monkeypatch):
    """The key-writing step raises on its second call, after the first replacement is in."""
    real = keymod._insert
    calls = []

    def insert(conn, **kw):
        calls.append(kw)
        if len(calls) == 2:
            raise RuntimeError("injected failure in the second key write")
        return real(conn, **kw)

    monkeypatch.setattr(keymod, "_insert", insert)
    return calls


def _assert_old_keys_intact(settings, old, user="erin"):
    rows = _user_keys(settings, user)
    assert [r[0] for r in rows] == sorted(k["id"] for k in old), "a replacement key was kept"
    assert all(r[1] is None for r in rows), "an old key was left revoked"


@pytest.mark.parametrize("injection", ["fail_second_insert", "fail_second_key_write"])
def test_rotation_failing_halfway_through_the_api_keeps_the_old_keys(
    request, client, settings, admin_key, make_key, injection
):
    old = [make_key(user="erin", name=n) for n in ("a", "b", "c")]
    request.getfixturevalue(injection)
    r = client.post("/api/v1/admin/users/erin/rotate-keys", headers=admin_key["headers"])
    assert r.status_code == 500
    _assert_old_keys_intact(settings, old)
    for key in old:
        assert client.get("/api/v1/jobs", headers=key["headers"]).status_code == 200


def test_rotation_failing_halfway_through_the_cli_keeps_the_old_keys(request, settings, make_key):
    import subprocess
    import sys

    from helpers import env_for

    old = [make_key(user="erin", name=n) for n in ("a", "b", "c")]
    request.getfixturevalue("fail_second_insert")
    proc = subprocess.run(
        [sys.executable, "-m", "ffmpeg_api.cli", "keys", "rotate-user", "erin", "--json"],
        env=env_for(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0 and "injected failure" in proc.stderr
    _assert_old_keys_intact(settings, old)


def _count(settings, name):
    with psycopg.connect(settings.database_url) as conn:
        return conn.execute("SELECT count(*) FROM api_keys WHERE name = %s", (name,)).fetchone()[0]


def test_db_transaction_commits_on_success_and_rolls_back_on_error(settings):
    url, size = settings.database_url, settings.database_pool_size
    with pytest.raises(RuntimeError), dbmod.transaction(url, size) as conn:
        conn.execute(
            "INSERT INTO api_keys (id, key_hash, name, user_id) VALUES ('tx1', 'h1', 'tx', 'u')"
        )
        conn.execute(
            "INSERT INTO api_keys (id, key_hash, name, user_id) VALUES ('tx2', 'h2', 'tx', 'u')"
        )
        raise RuntimeError("between two writes")
    assert _count(settings, "tx") == 0
    with dbmod.transaction(url, size) as conn:
        conn.execute(
            "INSERT INTO api_keys (id, key_hash, name, user_id) VALUES ('tx3', 'h3', 'tx', 'u')"
        )
    assert _count(settings, "tx") == 1


@pytest.mark.parametrize("kind", ["pooled", "standalone", "standalone-after-a-read"])
def test_a_domain_write_is_committed_when_it_returns_on_every_kind_of_connection(settings, kind):
    if kind == "pooled":
        pool = dbmod.get_pool(settings.database_url, settings.database_pool_size)
        conn = pool.getconn()
    else:
        conn = dbmod.connect(settings.database_url)
        if kind == "standalone-after-a-read":
            conn.execute("SELECT 1")  # an implicit transaction is open
    try:
        key, _raw = keymod.create(conn, name="committed", user_id="u")
        # Seen from another session at once: nothing is left for the caller to commit.
        assert _count(settings, "committed") == 1
        assert keymod.revoke(conn, key["id"])["changed"] is True
        assert _user_keys(settings, "u")[0][1] is not None
    finally:
        if kind == "pooled":
            pool.putconn(conn)
        else:
            conn.close()


def test_a_domain_write_refuses_to_run_inside_a_callers_transaction(settings):
    with (
        pytest.raises(psycopg.ProgrammingError),
        dbmod.transaction(settings.database_url, settings.database_pool_size) as conn,
    ):
        keymod.create(conn, name="nested", user_id="u")
    assert _count(settings, "nested") == 0
