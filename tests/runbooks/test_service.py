"""The service-facing runbooks against the deployed stack: health check, stuck jobs,
maintenance mode, API key compromise, slow processing, high API latency, horizontal scaling.

Each test injects its fault first (workers stopped, jobs left processing by a dead worker, a
compromised key), previews the playbook in check mode and shows the state did not move, runs
it, shows the repair, and runs it again for changed=0. Every test puts the stack back.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest
from runbook_helpers import (
    ADMIN,
    INVENTORY,
    REPO,
    STORAGE,
    VENV_BIN,
    admin,
    ansible_env,
    api_master_pid,
    assert_check_mode_changes_nothing,
    assert_second_run_changes_nothing,
    gunicorn_workers,
    http,
    make_input,
    playbook,
    redis_client,
    rows_digest,
    sql,
    submit_transcodes,
    wait_for,
    workers_registered,
)

WORKERS = "ffmpeg-api-worker:"
MAINTENANCE_KEY = "ffmpeg_api:maintenance"


def supervisorctl(*args: str) -> str:
    proc = subprocess.run(["supervisorctl", *args], capture_output=True, text=True, timeout=120)
    return proc.stdout + proc.stderr


def start_workers() -> None:
    supervisorctl("start", WORKERS)
    wait_for("the workers to register", lambda: len(workers_registered()) >= 1, timeout=60)


@pytest.fixture
def workers_stopped(stack):
    """The deployed workers stopped (as after a crash of every worker); started again after."""
    supervisorctl("stop", WORKERS)
    wait_for("the workers to unregister", lambda: workers_registered() == [], timeout=60)
    try:
        yield
    finally:
        start_workers()


# --- health check -----------------------------------------------------------------------


def test_health_check_passes_then_fails_readably_without_workers(stack):
    quick = playbook("health_check.yml")
    assert quick.changed == 0 and "healthy" in quick.out
    deep = playbook("health_check.yml", extra_vars={"health_check_mode": "deep"})
    assert "database connections" in deep.out and deep.changed == 0

    supervisorctl("stop", WORKERS)
    try:
        wait_for("the workers to unregister", lambda: workers_registered() == [], timeout=60)
        failed = playbook("health_check.yml", extra_vars={"health_check_mode": "deep"}, expect_rc=2)
        # The service's verdict (degraded: jobs wait for a worker), and the play fails on it.
        assert "degraded: workers: 0 alive" in failed.out, failed.out[-3000:]
        # Check mode runs the same read-only check and fails the same way.
        previewed = playbook("health_check.yml", check=True, expect_rc=2)
        assert "workers: 0 alive" in previewed.out
    finally:
        start_workers()
    assert playbook("health_check.yml").changed == 0


def test_health_check_refuses_a_bad_mode(stack):
    run = playbook("health_check.yml", extra_vars={"health_check_mode": "thorough"}, expect_rc=2)
    assert "health_check_mode must be quick or deep" in run.out


# --- stuck jobs -------------------------------------------------------------------------


def _job_state(ids: list[str]) -> list[tuple]:
    return sql(
        "SELECT id::text, status, retry_count, rq_job_id, worker_id, heartbeat_at, updated_at"
        " FROM jobs WHERE id::text = ANY(%s) ORDER BY id",
        (ids,),
    )


def test_stuck_jobs_two_hours_old_are_requeued_and_complete(workers_stopped, api_key):
    name = f"stuck-{os.getpid()}-{time.monotonic_ns()}.mp4"
    source = make_input(name, key=api_key["api_key"])
    ids = submit_transcodes(api_key["api_key"], source, 2, height=120, preset="ultrafast")
    # The fault: a worker took them two hours ago and died (its name is registered nowhere);
    # their RQ entries went with it.
    sql(
        "UPDATE jobs SET status = 'processing', worker_id = 'localhost.1.cpu', stage = 'transcode',"
        " started_at = now() - interval '2 hours', heartbeat_at = now() - interval '2 hours',"
        " updated_at = now() - interval '2 hours' WHERE id::text = ANY(%s)",
        (ids,),
    )
    r = redis_client()
    for job_id in ids:
        queue = sql("SELECT queue FROM jobs WHERE id::text = %s", (job_id,))[0][0]
        r.lrem(f"rq:queue:{queue}", 0, f"{job_id}_0")

    def snapshot():
        return (_job_state(ids), r.lrange("rq:queue:default", 0, -1), workers_registered())

    try:
        preview = assert_check_mode_changes_nothing("stuck_jobs.yml", snapshot)
        assert "Requeue stuck jobs" in "".join(preview.changed_tasks())
        assert [s[1] for s in _job_state(ids)] == ["processing", "processing"]

        run = playbook("stuck_jobs.yml")
        assert run.changed >= 2, run.out[-3000:]  # requeued, and the workers started
        rows = wait_for(
            "the requeued jobs to complete",
            lambda: (lambda s: s if all(x[1] == "completed" for x in s) else None)(_job_state(ids)),
            timeout=180,
            interval=2,
        )
        assert all(x[2] == 1 for x in rows), rows  # one retry each
        assert all(x[4] != "localhost.1.cpu" or x[1] == "completed" for x in rows)
        assert_second_run_changes_nothing("stuck_jobs.yml")
    finally:
        os.unlink(os.path.join(STORAGE, source))


def test_stuck_jobs_refuses_a_bad_threshold(stack):
    run = playbook("stuck_jobs.yml", extra_vars={"stuck_jobs_older_than": "soon"}, expect_rc=2)
    assert "stuck_jobs_older_than must be a duration" in run.out


# --- maintenance ------------------------------------------------------------------------


def test_maintenance_mode_answers_503_and_is_lifted(stack, api_key):
    r = redis_client()
    assert r.get(MAINTENANCE_KEY) is None, "maintenance mode was already on"
    key = api_key["api_key"]
    assert http("GET", "/jobs?limit=1", key=key)[0] == 200
    on = {"maintenance_state": "on", "maintenance_ttl": "10m", "maintenance_reason": "runbook test"}
    try:
        assert_check_mode_changes_nothing(
            "maintenance.yml",
            lambda: (r.get(MAINTENANCE_KEY), r.ttl(MAINTENANCE_KEY)),
            extra_vars=on,
        )
        assert http("GET", "/jobs?limit=1", key=key)[0] == 200

        run = playbook("maintenance.yml", extra_vars=on)
        assert run.changed == 1
        status, body = http("GET", "/jobs?limit=1", key=key)
        assert status == 503, body
        assert 0 < r.ttl(MAINTENANCE_KEY) <= 600
        assert http("GET", "/health")[0] == 200  # health stays reachable for the balancer
        ttl_before = r.ttl(MAINTENANCE_KEY)
        assert_second_run_changes_nothing("maintenance.yml", extra_vars=on)
        assert r.ttl(MAINTENANCE_KEY) <= ttl_before  # a rerun did not extend the expiry

        off = {"maintenance_state": "off"}
        snap = r.get(MAINTENANCE_KEY)
        assert_check_mode_changes_nothing(
            "maintenance.yml", lambda: r.get(MAINTENANCE_KEY), extra_vars=off
        )
        assert r.get(MAINTENANCE_KEY) == snap
        assert playbook("maintenance.yml", extra_vars=off).changed == 1
        assert http("GET", "/jobs?limit=1", key=key)[0] == 200
        assert_second_run_changes_nothing("maintenance.yml", extra_vars=off)
    finally:
        r.delete(MAINTENANCE_KEY)


def test_maintenance_requires_a_state(stack):
    run = playbook("maintenance.yml", expect_rc=2)
    assert "Say maintenance_state=on or maintenance_state=off" in run.out


# --- rate limit (the module the DDoS runbook uses) ----------------------------------------


def _module(name: str, args: dict, check: bool = False) -> dict:
    argv = [
        os.path.join(VENV_BIN, "ansible"),
        "-i",
        INVENTORY,
        "localhost",
        "-m",
        name,
        "-a",
        json.dumps(args),
        "--one-line",
    ]
    if check:
        argv += ["--check", "--diff"]
    proc = subprocess.run(
        argv, cwd=REPO, capture_output=True, text=True, timeout=120, env=ansible_env()
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    return json.loads(out.split(" => ", 1)[1])


def test_rate_limit_module_sets_and_restores(stack):
    before = admin("ratelimit", "get")
    r = redis_client()
    keys = ("ffmpeg_api:ratelimit:global", "ffmpeg_api:ddos_protection")
    snap = [r.get(k) for k in keys]
    wanted = {"per_minute": before["global_per_minute"] + 77, "ddos": not before["ddos_protection"]}
    try:
        preview = _module("ffmpeg_api.ops.rate_limit", wanted, check=True)
        assert preview["changed"] is True and [r.get(k) for k in keys] == snap
        done = _module("ffmpeg_api.ops.rate_limit", wanted)
        assert done["changed"] is True
        assert done["limits"]["global_per_minute"] == wanted["per_minute"]
        assert admin("ratelimit", "get")["ddos_protection"] is wanted["ddos"]
        assert _module("ffmpeg_api.ops.rate_limit", wanted)["changed"] is False
    finally:
        for k, v in zip(keys, snap, strict=True):
            if v is None:
                r.delete(k)
            else:
                r.set(k, v)


# --- API key compromise -----------------------------------------------------------------


def test_api_key_compromise_revokes_the_key_and_rotates_the_users_others(stack, api_key, tmp_path):
    user = api_key["user_id"]
    leaked, leaked_id = api_key["api_key"], api_key["id"]
    others = [admin("keys", "create", "--user", user, "--name", f"other{i}") for i in range(2)]
    bystander = admin("keys", "create", "--user", f"{user}-bystander", "--name", "b")
    for _ in range(3):
        assert http("GET", "/jobs?limit=1", key=leaked)[0] == 200
    new_keys_file = tmp_path / "new-keys.txt"
    extra = {
        "api_key_id": leaked_id,
        "api_key_new_keys_file": str(new_keys_file),
        "api_key_evidence_dir": str(tmp_path / "evidence"),
    }
    created = []
    try:
        identify = playbook("api_key_compromise.yml")
        assert leaked_id in identify.out and identify.changed == 0

        admin("keys", "list")  # folds the usage counters in before the snapshot
        assert_check_mode_changes_nothing(
            "api_key_compromise.yml", lambda: rows_digest("api_keys"), extra_vars=extra
        )
        assert http("GET", "/jobs?limit=1", key=leaked)[0] == 200
        assert not new_keys_file.exists()

        run = playbook("api_key_compromise.yml", extra_vars=extra)
        assert run.changed >= 2, run.out[-3000:]
        for o in others:
            assert o["api_key"] not in run.out  # secrets stay out of the output
        assert http("GET", "/jobs?limit=1", key=leaked)[0] == 401
        for o in others:
            assert http("GET", "/jobs?limit=1", key=o["api_key"])[0] == 401
        assert http("GET", "/jobs?limit=1", key=bystander["api_key"])[0] == 200
        lines = [line.split() for line in new_keys_file.read_text().splitlines()]
        assert oct(new_keys_file.stat().st_mode & 0o777) == "0o600"
        assert sorted(n for _, n, _ in lines) == ["other0", "other1"]
        created = [i for i, _, _ in lines]
        for _, _, raw in lines:
            assert http("GET", "/jobs?limit=1", key=raw)[0] == 200
        leaked_row = sql(
            "SELECT monitored, revoked_at IS NOT NULL, revoked_reason FROM api_keys WHERE id = %s",
            (leaked_id,),
        )[0]
        assert leaked_row == (True, True, "suspected compromise")
        assert (tmp_path / "evidence" / f"{leaked_id}-access.log").read_text().count(leaked_id) >= 3

        assert_second_run_changes_nothing("api_key_compromise.yml", extra_vars=extra)
        assert http("GET", "/jobs?limit=1", key=lines[0][2])[0] == 200  # not rotated again
    finally:
        for key_id in [*created, *(o["id"] for o in others), bystander["id"]]:
            subprocess.run([ADMIN, "keys", "revoke", key_id, "--json"], capture_output=True)


# --- slow processing and high latency (diagnosis) ------------------------------------------


def test_slow_processing_reports_times_and_changes_nothing(stack):
    assert playbook("slow_processing.yml", check=True).changed == 0
    run = playbook("slow_processing.yml", extra_vars={"slow_processing_since": "7d"})
    assert run.changed == 0
    assert "operation count completed failed avg_s p95_s" in run.out
    assert "FFMPEG_THREADS=" in run.out


def test_high_api_latency_diagnosis_changes_nothing(stack):
    assert playbook("high_api_latency.yml", check=True).changed == 0
    run = playbook("high_api_latency.yml")
    assert run.changed == 0
    assert "response time:" in run.out and "used_memory_human" in run.out


def test_horizontal_scaling_refuses_hosts_outside_the_inventory(stack):
    run = playbook(
        "horizontal_scaling.yml",
        extra_vars={"horizontal_scaling_new_hosts": "api9"},
        expect_rc=2,
    )
    assert "not in the inventory" in run.out and "api9" in run.out


def _env_files() -> dict:
    found = {}
    for name in ("ffmpeg-api.env", "api.env"):
        with open(f"/etc/ffmpeg-api/{name}", encoding="utf-8") as fh:
            found[name] = fh.read()
    return found


def test_high_api_latency_scales_the_api_and_raises_the_pool(stack):
    before_files, before_pid = _env_files(), api_master_pid()
    assert "DATABASE_POOL_SIZE=" not in before_files["ffmpeg-api.env"]
    scale = {"high_api_latency_api_workers": 2, "high_api_latency_db_pool_size": 15}
    try:
        assert_check_mode_changes_nothing(
            "high_api_latency.yml", lambda: (_env_files(), api_master_pid()), extra_vars=scale
        )
        run = playbook("high_api_latency.yml", extra_vars=scale)
        assert run.changed >= 2, run.out[-3000:]
        files = _env_files()
        assert "GUNICORN_WORKERS=2\n" in files["api.env"]
        assert "DATABASE_POOL_SIZE=15\n" in files["ffmpeg-api.env"]
        pid = api_master_pid()
        assert pid and pid != before_pid
        wait_for("two gunicorn workers", lambda: gunicorn_workers(pid) == 2, timeout=60)
        assert http("GET", "/health")[0] == 200
        assert_second_run_changes_nothing("high_api_latency.yml", extra_vars=scale)
    finally:
        # Back to what the inventory says (the runbook tells engineers to put new values there).
        playbook("site.yml", "--tags", "app,api")
    assert _env_files() == before_files


def test_horizontal_scaling_deploys_and_verifies_the_hosts_it_names(stack):
    # On this one-host inventory every host is already in service: the run must pass its
    # checks (HAProxy has the api host UP, Prometheus scrapes it, its workers are registered)
    # and change nothing anywhere else.
    run = playbook(
        "horizontal_scaling.yml", extra_vars={"horizontal_scaling_new_hosts": "localhost"}
    )
    assert run.changed == 0, run.changed_tasks()
    for task in (
        "Wait until HAProxy reports each new api host UP",
        "Wait until Prometheus scrapes each new api host",
        "Wait until each new worker host has workers registered",
    ):
        section = run.out.split(f"TASK [{task}]", 1)[1].split("TASK [", 1)[0]
        assert "ok: [localhost]" in section and "skipping" not in section, section
