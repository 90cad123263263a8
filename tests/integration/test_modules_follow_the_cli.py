"""Each domain module beside the CLI, on the same real state (PostgreSQL, Redis): the module's
answer (changed, diff, verdict) must be the CLI's, in check mode and for real.

The CLI is the one place that decides; a module that planned or judged by itself would drift
from it (it did: "no workers" was unhealthy in service_health, degraded in /health).
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import uuid
from dataclasses import replace

import pytest
import redis
from helpers import env_for

from ffmpeg_api import control

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODULES = os.path.join(REPO, "collections/ansible_collections/ffmpeg_api/ops/plugins/modules")


@pytest.fixture
def side_by_side(settings, tmp_path):
    """(cli, module): run the admin CLI, or a module through its own entry point the way
    Ansible does (ANSIBLE_MODULE_ARGS), against the test's servers."""
    wrapper = tmp_path / "ffmpeg-api-admin"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} -m ffmpeg_api.cli "$@"\n')
    wrapper.chmod(0o755)

    def env(s):
        e = env_for(s)
        e["PYTHONPATH"] = os.pathsep.join(
            [os.path.join(REPO, "collections"), os.path.join(REPO, "app")]
        )
        return e

    def cli(*args, s=None, expect=0):
        proc = subprocess.run(
            [str(wrapper), *args, "--json"],
            env=env(s or settings),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == expect, (args, proc.returncode, proc.stdout, proc.stderr)
        return json.loads(proc.stdout) if proc.stdout.strip() else {}

    def module(name, s=None, check=False, **args):
        path = tmp_path / f"{name}-{uuid.uuid4().hex}.json"
        path.write_text(
            json.dumps(
                {"ANSIBLE_MODULE_ARGS": {"cli": str(wrapper), "_ansible_check_mode": check, **args}}
            )
        )
        proc = subprocess.run(
            [sys.executable, os.path.join(MODULES, f"{name}.py"), str(path)],
            env=env(s or settings),
            capture_output=True,
            text=True,
            timeout=120,
        )
        return json.loads(proc.stdout)

    return cli, module


def _same(cli_answer, module_answer, *fields):
    for field in fields:
        assert module_answer.get(field) == cli_answer.get(field), (field, cli_answer, module_answer)


# --- maintenance_mode -------------------------------------------------------------------

# (state before: None = off, else (reason, ttl seconds or None)), the task's arguments
MAINTENANCE_CASES = [
    (None, dict(state="on", reason="resize", ttl="1h"), True),
    (("resize", 3000), dict(state="on", reason="resize", ttl="1h"), False),  # a rerun
    (("resize", 3000), dict(state="on", reason="resize", ttl="1h", extend_ttl=True), True),
    (("resize", None), dict(state="on", reason="resize", ttl="1h"), True),  # no expiry yet
    (("resize", None), dict(state="on"), False),  # no reason given: the current one is kept
    (("resize", 3000), dict(state="on", reason="restore"), True),
    (("resize", 3000), dict(state="on", reason="resize", ttl="1.5h"), False),  # decimals parse
    (("resize", None), dict(state="off"), True),
    (None, dict(state="off"), False),
]


def _same_status(a, b):
    """Equal maintenance views, but for an expiry that counts down between the two calls."""
    assert {k: v for k, v in a.items() if k != "ttl"} == {k: v for k, v in b.items() if k != "ttl"}
    assert (a["ttl"] is None) == (b["ttl"] is None), (a, b)
    assert a["ttl"] is None or abs(a["ttl"] - b["ttl"]) <= 5, (a, b)


def _maintenance_cli_args(args):
    out = ["maintenance", args["state"]]
    if args.get("reason") is not None:
        out += ["--reason", args["reason"]]
    if args.get("ttl") is not None:
        out += ["--ttl", args["ttl"]]
    if args["state"] == "on":
        out.append("--extend-ttl" if args.get("extend_ttl") else "--keep-ttl")
    return out


@pytest.mark.parametrize("before,args,changes", MAINTENANCE_CASES)
def test_maintenance_mode_answers_like_the_cli(side_by_side, settings, before, args, changes):
    cli, module = side_by_side
    r = redis.Redis.from_url(settings.redis_url)

    def arrange():
        control.maintenance_off(r)
        if before is not None:
            control.maintenance_on(r, reason=before[0], ttl=before[1])

    arrange()
    start = control.maintenance_status(r)
    preview = cli(*_maintenance_cli_args(args), "--dry-run")
    assert preview["changed"] is changes  # the documented rule (README, module docs)
    _same_status(control.maintenance_status(r), start)  # a dry run changes nothing
    checked = module("maintenance_mode", check=True, **args)
    assert not checked.get("failed"), checked
    _same(preview, checked, "changed")
    for side in ("before", "after"):
        _same_status(checked["diff"][side], preview["diff"][side])
    done = module("maintenance_mode", **args)
    assert not done.get("failed"), done
    _same(preview, done, "changed")
    # what the preview said would be is what is
    for side in ("before", "after"):
        _same_status(done["diff"][side], preview["diff"][side])
    # and the CLI, run for real on the same state, answers the same
    arrange()
    assert cli(*_maintenance_cli_args(args))["changed"] == preview["changed"]


def test_maintenance_mode_refuses_what_the_cli_refuses(side_by_side):
    cli, module = side_by_side
    for ttl in ("soon", "0", "0.5s"):
        cli("maintenance", "on", "--ttl", ttl, "--dry-run", expect=2)
        out = module("maintenance_mode", check=True, state="on", ttl=ttl)
        assert out.get("failed") and out.get("rc") == 2, out


# --- rate_limit -------------------------------------------------------------------------

RATE_CASES = [
    ((0, False), dict(per_minute=0, ddos=False), False),
    ((0, False), dict(per_minute=100), True),
    ((100, False), dict(per_minute=100, ddos=True), True),
    ((100, True), dict(ddos=True), False),
    ((100, True), dict(per_minute=0, ddos=False), True),
]


@pytest.mark.parametrize("before,args,changes", RATE_CASES)
def test_rate_limit_answers_like_the_cli(side_by_side, settings, before, args, changes):
    cli, module = side_by_side
    r = redis.Redis.from_url(settings.redis_url)

    def arrange():
        control.set_global_limit(r, before[0])
        control.set_ddos(r, before[1])

    cli_args = ["ratelimit", "set"]
    if args.get("per_minute") is not None:
        cli_args.append(str(args["per_minute"]))
    if args.get("ddos") is not None:
        cli_args += ["--ddos", "on" if args["ddos"] else "off"]

    arrange()
    preview = cli(*cli_args, "--dry-run")
    assert preview["changed"] is changes
    checked = module("rate_limit", check=True, **args)
    assert not checked.get("failed"), checked
    _same(preview, checked, "changed", "diff")
    done = module("rate_limit", **args)
    assert not done.get("failed"), done
    _same(preview, done, "changed", "diff")
    assert cli("ratelimit", "get") == preview["diff"]["after"]
    arrange()
    assert cli(*cli_args)["changed"] == preview["changed"]


def test_rate_limit_refuses_what_the_cli_refuses(side_by_side):
    cli, module = side_by_side
    cli("ratelimit", "set", "-5", "--dry-run", expect=2)
    out = module("rate_limit", check=True, per_minute=-5)
    assert out.get("failed") and out.get("rc") == 2, out


# --- service_health ---------------------------------------------------------------------


@pytest.fixture
def health_url():
    """A loopback URL that answers 200 (the API's health endpoint stands in)."""

    class Ok(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/ok" else 503)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _health_cli_args(args):
    out = ["health"] + (["--deep"] if args.get("deep") else [])
    for name in args.get("ignore", []):
        out += ["--ignore", name]
    if args.get("url"):
        out += ["--url", args["url"], "--samples", "2"]
    return out


HEALTH_CASES = [
    # (maintenance on?, database alive?, module arguments, the verdict this state must get)
    (False, True, {}, "degraded"),  # no worker runs in this layer: degraded, as /health says
    (False, True, dict(ignore=["workers"]), "healthy"),
    (True, True, dict(deep=True, ignore=["workers"]), "degraded"),
    (True, True, dict(ignore=["workers", "maintenance"]), "healthy"),
    (False, False, dict(deep=True), "unhealthy"),
    (False, False, dict(ignore=["database"]), "degraded"),
    (False, True, dict(ignore=["workers"], url="/ok"), "healthy"),
    (False, True, dict(ignore=["workers"], url="/down"), "unhealthy"),
    (False, True, dict(ignore=["workers", "http"], url="/down"), "healthy"),
]


@pytest.mark.parametrize("maintenance,db_alive,args,expected", HEALTH_CASES)
def test_service_health_passes_the_cli_verdict_on(
    side_by_side, settings, health_url, maintenance, db_alive, args, expected
):
    from servers import free_port

    cli, module = side_by_side
    s = (
        settings
        if db_alive
        else replace(settings, database_url=f"postgresql://nobody@127.0.0.1:{free_port()}/x")
    )
    if maintenance:
        control.maintenance_on(redis.Redis.from_url(settings.redis_url), reason="resize")
    if args.get("url"):
        args = dict(args, url=health_url + args["url"], samples=2)
    report = cli(*_health_cli_args(args), s=s)
    assert report["status"] == expected, report
    # fail_when_unhealthy=false: the report; true: the same report, failing when unhealthy
    for fail in (False, True):
        out = module("service_health", s=s, fail_when_unhealthy=fail, **args)
        assert out["status"] == report["status"] and out["healthy"] == report["healthy"], out
        assert out["summary"] == report["summary"]
        assert out["problems"] == [p["message"] for p in report["problems"]]
        assert bool(out.get("failed")) == (fail and expected == "unhealthy"), out
        assert out["changed"] is False


# --- stuck_jobs -------------------------------------------------------------------------


def _stuck_job(conn, hours_ago):
    job_id = str(uuid.uuid4())
    conn.execute(
        "INSERT INTO jobs (id, status, priority, hardware, queue, input_path, output_format,"
        " operations, worker_id, rq_job_id, created_at, started_at, heartbeat_at, updated_at,"
        " input_duration) VALUES (%s, 'processing', 'normal', 'auto', 'default', 'uploads/x.mp4',"
        " 'mp4', '[{\"type\": \"transcode\"}]', 'gone-worker', %s,"
        " now() - make_interval(hours => %s), now() - make_interval(hours => %s),"
        " now() - make_interval(hours => %s), now() - make_interval(hours => %s), 3)",
        (job_id, f"{job_id}_0", hours_ago, hours_ago, hours_ago, hours_ago),
    )
    conn.commit()
    return job_id


@pytest.mark.parametrize("hours_ago", [2, 0])
def test_stuck_jobs_answers_like_the_cli(side_by_side, db_conn, hours_ago):
    cli, module = side_by_side
    _stuck_job(db_conn, hours_ago)
    preview = cli("jobs", "requeue-stuck", "--older-than", "1.5h", "--dry-run")
    checked = module("stuck_jobs", check=True, older_than="1.5h")
    assert not checked.get("failed"), checked
    assert checked["changed"] == preview["changed"] == (hours_ago == 2)
    report = module("stuck_jobs", older_than="1.5h", requeue=False)
    assert report["changed"] is False and report["stuck"] == checked["stuck"]
    done = module("stuck_jobs", older_than="1.5h")
    assert done["changed"] == preview["changed"] and done["requeued"] == preview["requeued"]
    assert cli("jobs", "requeue-stuck", "--older-than", "1.5h", "--dry-run")["changed"] is False
