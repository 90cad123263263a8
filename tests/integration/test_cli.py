"""The admin CLI as the Ansible modules will call it: real processes, --json, --dry-run,
exit codes, idempotency."""

import json
import os
import subprocess
import sys
import time
import uuid

import psycopg
import pytest
import redis
from helpers import env_for

from ffmpeg_api import db as dbmod


@pytest.fixture
def cli(settings):
    def run(*args, expect=0, settings_override=None):
        proc = subprocess.run(
            [sys.executable, "-m", "ffmpeg_api.cli", *args],
            env=env_for(settings_override or settings),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == expect, (args, proc.returncode, proc.stdout, proc.stderr)
        if "--json" in args:
            return json.loads(proc.stdout)
        return proc

    return run


def test_usage_errors_exit_2_and_failures_exit_1(cli):
    cli("jobs", "requeue-stuck", "--older-than", "soon", expect=2)
    cli("storage", "cleanup", expect=2)
    out = cli("keys", "usage", "nosuchkey", "--json", expect=1)
    assert out["failed"] is True and out["error"]["code"] == "not_found"


def test_db_upgrade_is_idempotent(cli):
    assert cli("db", "upgrade", "--json")["changed"] is False
    assert cli("db", "upgrade", "--dry-run", "--json")["pending"] == []
    assert cli("db", "status", "--json")["up_to_date"] is True


def test_db_upgrade_on_empty_database_under_lock(settings, servers):
    name = "mig_" + uuid.uuid4().hex[:8]
    with psycopg.connect(servers["pg"].url(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    from dataclasses import replace

    fresh = replace(settings, database_url=servers["pg"].url(name))
    # Two upgrades at once: the advisory lock makes one apply and the other find nothing.
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "ffmpeg_api.cli", "db", "upgrade", "--json"],
            env=env_for(fresh),
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    assert sorted(len(o["applied"]) for o in outs) == [0, len(dbmod.available_migrations())]


def test_keys_lifecycle(cli, settings):
    created = cli("keys", "create", "--name", "ci", "--user", "ivan", "--json")
    raw, key_id = created["api_key"], created["id"]
    assert raw.startswith(f"fk_{key_id}_")
    listed = cli("keys", "list", "--json")["keys"]
    assert [k["id"] for k in listed] == [key_id] and raw not in json.dumps(listed)
    assert cli("keys", "revoke", key_id, "--dry-run", "--json")["changed"] is True
    assert cli("keys", "list", "--json", "--active-only")["keys"] != []
    assert cli("keys", "revoke", key_id, "--json")["changed"] is True
    assert cli("keys", "revoke", key_id, "--json")["changed"] is False
    assert cli("keys", "list", "--json", "--active-only")["keys"] == []


def test_rotate_user_dry_run_changes_nothing(cli):
    a = cli("keys", "create", "--name", "a", "--user", "judy", "--json")
    preview = cli("keys", "rotate-user", "judy", "--dry-run", "--json")
    assert preview["changed"] is True and [k["id"] for k in preview["revoked"]] == [a["id"]]
    assert len(cli("keys", "list", "--json", "--active-only")["keys"]) == 1
    done = cli("keys", "rotate-user", "judy", "--json")
    assert len(done["created"]) == 1 and done["created"][0]["key"].startswith("fk_")
    active = cli("keys", "list", "--json", "--active-only")["keys"]
    assert [k["id"] for k in active] == [done["created"][0]["id"]]


def test_monitor_flag_idempotent(cli):
    a = cli("keys", "create", "--name", "a", "--user", "kim", "--json")
    assert cli("keys", "monitor", a["id"], "--json")["changed"] is True
    assert cli("keys", "monitor", a["id"], "--json")["changed"] is False
    assert cli("keys", "monitor", a["id"], "--off", "--json")["changed"] is True


def test_maintenance_on_off_status(cli, settings):
    assert cli("maintenance", "on", "--ttl", "10m", "--dry-run", "--json")["changed"] is True
    assert cli("maintenance", "status", "--json")["enabled"] is False
    on = cli("maintenance", "on", "--ttl", "10m", "--reason", "restore", "--json")
    assert on["enabled"] is True and 0 < on["ttl"] <= 600
    assert cli("maintenance", "off", "--json")["changed"] is True
    assert cli("maintenance", "off", "--json")["changed"] is False


def test_ratelimit_set_and_ddos(cli):
    assert cli("ratelimit", "set", "100", "--json")["global_per_minute"] == 100
    assert cli("ratelimit", "set", "100", "--json")["changed"] is False
    # a dry run reports what it would set, and sets nothing
    assert cli("ratelimit", "ddos", "on", "--dry-run", "--json")["ddos_protection"] is True
    assert cli("ratelimit", "get", "--json")["ddos_protection"] is False
    assert cli("ratelimit", "ddos", "on", "--json")["ddos_protection"] is True
    assert cli("ratelimit", "ddos", "on", "--json")["changed"] is False
    assert cli("ratelimit", "get", "--json")["ddos_protection"] is True


def _insert_job(conn, *, status, hours_ago, retry_count=0, worker="gone-worker"):
    job_id = str(uuid.uuid4())
    conn.execute(
        "INSERT INTO jobs (id, status, priority, hardware, queue, input_path, output_format,"
        " operations, worker_id, retry_count, rq_job_id, created_at, started_at, heartbeat_at,"
        " updated_at, input_duration)"
        " VALUES (%s, %s, 'normal', 'auto', 'default', 'uploads/x.mp4', 'mp4',"
        ' \'[{"type": "transcode"}]\', %s, %s, %s, now() - make_interval(hours => %s),'
        " now() - make_interval(hours => %s), now() - make_interval(hours => %s),"
        " now() - make_interval(hours => %s), 3)",
        (
            job_id,
            status,
            worker,
            retry_count,
            f"{job_id}_{retry_count}",
            hours_ago,
            hours_ago,
            hours_ago,
            hours_ago,
        ),
    )
    conn.commit()
    return job_id


def test_requeue_stuck_bounded_and_previewable(cli, settings, db_conn):
    stale = _insert_job(db_conn, status="processing", hours_ago=2)
    exhausted = _insert_job(
        db_conn, status="processing", hours_ago=2, retry_count=settings.job_max_retries
    )
    fresh = _insert_job(db_conn, status="processing", hours_ago=0)
    preview = cli("jobs", "requeue-stuck", "--older-than", "1h", "--dry-run", "--json")
    assert preview["requeued"] == [stale] and preview["failed"] == [exhausted]
    db_conn.rollback()
    assert (
        db_conn.execute("SELECT count(*) AS n FROM jobs WHERE status = 'processing'").fetchone()[
            "n"
        ]
        == 3
    )
    done = cli("jobs", "requeue-stuck", "--older-than", "1h", "--json")
    assert done["requeued"] == [stale] and done["failed"] == [exhausted]
    db_conn.rollback()
    rows = {str(r["id"]): r for r in db_conn.execute("SELECT * FROM jobs")}
    assert rows[stale]["status"] == "queued" and rows[stale]["retry_count"] == 1
    assert rows[exhausted]["status"] == "failed" and "giving up" in rows[exhausted]["error"]
    assert rows[fresh]["status"] == "processing"
    q = redis.Redis.from_url(settings.redis_url).lrange("rq:queue:default", 0, -1)
    assert q == [f"{stale}_1".encode()]
    assert cli("jobs", "requeue-stuck", "--older-than", "1h", "--json")["changed"] is False


def test_cancel_and_stats_commands(cli, db_conn):
    job_id = _insert_job(db_conn, status="queued", hours_ago=0)
    assert cli("jobs", "cancel", job_id, "--dry-run", "--json")["changed"] is True
    assert cli("jobs", "cancel", job_id, "--json")["job"]["status"] == "cancelled"
    assert cli("jobs", "cancel", job_id, "--json")["changed"] is False
    stats = cli("jobs", "stats", "--json")
    assert stats["by_status"]["cancelled"] == 1
    assert cli("jobs", "cancel", str(uuid.uuid4()), "--json", expect=1)["failed"]


def test_storage_cleanup_removes_only_garbage(cli, settings, db_conn, make_settings, tmp_path):
    s = make_settings(storage_root=str(tmp_path / "root"))
    for sub in ("uploads", "output", "tmp"):
        os.makedirs(os.path.join(s.storage_root, sub))
    live = _insert_job(db_conn, status="completed", hours_ago=3)
    running = _insert_job(db_conn, status="processing", hours_ago=0)
    failed = _insert_job(db_conn, status="failed", hours_ago=3)
    ghost = str(uuid.uuid4())
    for job_id in (live, failed, ghost):
        d = os.path.join(s.output_dir, job_id)
        os.makedirs(d)
        with open(os.path.join(d, "output.mp4"), "wb") as fh:
            fh.write(b"x" * 100)
    old = time.time() - 3 * 86400
    for name in ("stale.tmp", f"{running}.0", "upload-x.part"):
        path = os.path.join(s.tmp_dir, name)
        with open(path, "wb") as fh:
            fh.write(b"y" * 10)
        os.utime(path, (old, old))
    with open(os.path.join(s.tmp_dir, "fresh.tmp"), "wb") as fh:
        fh.write(b"z")

    def state():
        return sorted(os.listdir(s.output_dir)), sorted(os.listdir(s.tmp_dir))

    before = state()
    args = ["storage", "cleanup", "--tmp-older-than", "1d", "--orphans", "--json"]
    preview = cli(*args, "--dry-run", settings_override=s)
    assert state() == before and preview["changed"] is True
    done = cli(*args, settings_override=s)
    assert sorted(done["removed_orphans"]) == sorted(f"output/{j}" for j in (failed, ghost))
    assert sorted(done["removed_tmp"]) == ["tmp/stale.tmp", "tmp/upload-x.part"]
    assert done["bytes_freed"] == preview["bytes_freed"] == 220
    outputs, tmps = state()
    assert outputs == [live] and sorted(tmps) == sorted([f"{running}.0", "fresh.tmp"])
    assert cli(*args, settings_override=s)["changed"] is False
    usage = cli("storage", "usage", "--json", settings_override=s)
    assert usage["areas"]["output"]["files"] == 1


def test_gpu_worker_refuses_to_start_without_gpu(cli):
    proc = cli("worker", "--kind", "gpu", expect=1)
    assert "GPU" in proc.stderr or "NVENC" in proc.stderr


def test_health_reports_components_and_deep_details(cli, db_conn):
    quick = cli("health", "--json")
    assert quick["deep"] is False
    assert {"database", "redis", "queues", "workers", "storage", "ffmpeg"} <= set(
        quick["components"]
    )
    assert quick["components"]["database"]["status"] == "ok"
    # No worker runs in this layer: the check says so in words.
    assert {"component": "workers", "message": "workers: 0 alive"} in quick["problems"]
    assert "connections" not in quick["components"]

    lost = _insert_job(db_conn, status="processing", hours_ago=0, worker="vanished.1.cpu")
    deep = cli("health", "--deep", "--json")
    conns = deep["components"]["connections"]
    assert conns["status"] == "ok" and conns["total"] >= 1 and conns["max_connections"] > 0
    assert sum(conns["by_state"].values()) == conns["total"]
    detail = deep["components"]["worker_jobs"]
    assert detail["jobs_of_missing_workers"] == {"vanished.1.cpu": 1}
    assert deep["status"] == "degraded"
    assert any(
        p["component"] == "worker_jobs" and "vanished.1.cpu" in p["message"]
        for p in deep["problems"]
    ), deep["problems"]
    cli("jobs", "cancel", lost, "--json")


def test_health_names_a_dead_database(cli, settings):
    from dataclasses import replace

    from servers import free_port

    dead = replace(settings, database_url=f"postgresql://nobody@127.0.0.1:{free_port()}/x")
    report = cli("health", "--deep", "--json", settings_override=dead)
    assert report["status"] == "unhealthy"
    assert report["components"]["database"]["status"] == "error"
    assert any(p["message"].startswith("database error (") for p in report["problems"]), report[
        "problems"
    ]


def test_rotate_user_created_before_makes_a_rerun_a_no_op(cli, db_conn):
    old = cli("keys", "create", "--name", "old", "--user", "lena", "--json")
    cutoff = db_conn.execute("SELECT now() AS t").fetchone()["t"].isoformat()
    db_conn.rollback()
    time.sleep(0.05)
    newer = cli("keys", "create", "--name", "newer", "--user", "lena", "--json")
    args = ("keys", "rotate-user", "lena", "--created-before", cutoff, "--json")
    preview = cli(*args, "--dry-run")
    assert preview["changed"] is True and [k["id"] for k in preview["revoked"]] == [old["id"]]
    done = cli(*args)
    assert [c["replaces"] for c in done["created"]] == [old["id"]]
    active = {
        k["id"] for k in cli("keys", "list", "--user", "lena", "--active-only", "--json")["keys"]
    }
    assert active == {newer["id"], done["created"][0]["id"]}
    assert cli(*args)["changed"] is False
    cli("keys", "rotate-user", "lena", "--created-before", "yesterday", expect=2)
