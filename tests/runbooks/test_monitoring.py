"""Monitoring against the deployed stack: every metric an alert, recording rule or dashboard
panel reads has series in the deployed Prometheus; every dashboard query runs there; the
database_backup playbook publishes its outcome, which fires and then clears BackupFailed.

Traffic, a finished job and a backup are produced first, so the series of a fresh stack exist.
"""

from __future__ import annotations

import calendar
import json
import os
import re
import subprocess
import time
import urllib.parse
import urllib.request

import promql
import pytest
from helpers import monitoring_auth
from runbook_helpers import (
    admin,
    assert_check_mode_changes_nothing,
    assert_second_run_changes_nothing,
    http,
    make_input,
    playbook,
    sql,
    tree_digest,
    wait_for,
)

PROMETHEUS = "http://127.0.0.1:9090"
STORAGE = "/var/lib/ffmpeg-api/storage"
TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"
BACKUP_PROM = os.path.join(TEXTFILE_DIR, "ffmpeg_api_backup.prom")
BACKUP_DIR = "/var/backups/ffmpeg-api/postgresql"


def prom(path: str, **params) -> dict:
    url = f"{PROMETHEUS}{path}?{urllib.parse.urlencode(params)}"
    req = urllib.request.Request(url, headers=monitoring_auth())
    with urllib.request.urlopen(req, timeout=15) as resp:
        body = json.load(resp)
    assert body["status"] == "success", body
    return body["data"]


def query(expr: str) -> list:
    return prom("/api/v1/query", query=expr)["result"]


def loaded_rules() -> list[dict]:
    return [r for g in prom("/api/v1/rules")["groups"] for r in g["rules"]]


def _sample_input(key: str) -> str:
    name = f"monitoring-{os.getpid()}-{time.monotonic_ns()}.mp4"
    return make_input(name, 1, size="160x120", rate=10, key=key)


@pytest.fixture(scope="module")
def produced(stack):
    """Traffic (2xx and 401), one finished job and a recorded backup on the deployed stack."""
    key = admin("keys", "create", "--user", f"monitoring-{os.getpid()}", "--name", "monitoring")
    try:
        assert http("GET", "/jobs", key="not-a-key")[0] == 401
        status, body = http(
            "POST",
            "/convert",
            key=key["api_key"],
            body=json.dumps(
                {
                    "input": _sample_input(key["api_key"]),
                    "output": "mp4",
                    "operations": [{"type": "transcode", "height": 60, "preset": "ultrafast"}],
                }
            ).encode(),
        )
        assert status in (200, 201, 202), body
        job_id = body["id"]

        def finished():
            rows = sql("SELECT status FROM jobs WHERE id::text = %s", (job_id,))
            return rows and rows[0][0] in ("completed", "failed")

        wait_for("the monitoring test's job", finished, timeout=120)
    finally:
        subprocess.run(
            ["/usr/local/bin/ffmpeg-api-admin", "keys", "revoke", str(key["id"]), "--json"],
            capture_output=True,
            check=False,
        )
    if not os.path.exists(BACKUP_PROM):
        playbook("database_backup.yml")
    return job_id


def test_the_role_rules_are_loaded_and_healthy(stack):
    rules = loaded_rules()
    alerts = {r["name"] for r in rules if r["type"] == "alerting"}
    assert {"QueueBacklog", "NoJobsProcessed", "BackupFailed", "StorageSpaceLow"} <= alerts

    def broken():
        return [
            (r["name"], r["health"], r.get("lastError"))
            for r in loaded_rules()
            if r["health"] != "ok"
        ]

    # Right after a deployment reloaded Prometheus, rules are "unknown" until evaluated (15 s).
    try:
        wait_for("every rule evaluated", lambda: not broken(), timeout=60, interval=3)
    except Exception:
        pytest.fail(f"rules not healthy: {broken()}")


def test_every_metric_of_the_rules_and_dashboards_has_series(produced):
    used: dict[str, set[str]] = {}
    for rule in loaded_rules():
        for name in promql.metric_names(rule["query"]):
            used.setdefault(name, set()).add(rule["name"])
    for board, title, expr in promql.dashboard_exprs():
        for name in promql.metric_names(expr):
            used.setdefault(name, set()).add(f"{board}: {title}")
    assert len(used) > 30

    def missing():
        return {n: sorted(u) for n, u in used.items() if not query(f'count({{__name__="{n}"}})')}

    # New series appear within a scrape and a rule evaluation (15 s each).
    try:
        wait_for("every metric in Prometheus", lambda: not missing(), timeout=75, interval=5)
    except Exception:
        pytest.fail(f"metrics without series (metric: used by): {missing()}")


def test_every_dashboard_query_runs(produced):
    for board, title, expr in promql.dashboard_exprs():
        result = query(expr)
        assert isinstance(result, list), f"{board}: {title}"
    # And the service's own panels show data, not just parse.
    assert query("kind_state:ffmpeg_workers:max")
    assert query("sum by (route) (route_status:http_requests:rate5m)")


def _backup_figures() -> dict[str, float]:
    with open(BACKUP_PROM, encoding="utf-8") as fh:
        return {
            line.split()[0]: float(line.split()[1])
            for line in fh
            if line.startswith("ffmpeg_api_backup_")
        }


def _alert_state(name: str) -> str | None:
    states = [
        a["state"] for a in prom("/api/v1/alerts")["alerts"] if a["labels"]["alertname"] == name
    ]
    return states[0] if states else None


def test_a_failed_backup_fires_backup_failed_until_a_backup_succeeds(produced):
    playbook("database_backup.yml")  # a recorded backup to start from
    before = _backup_figures()
    # The fault: the backup cannot be written.
    failed = playbook(
        "database_backup.yml",
        extra_vars={
            "database_backup_dir": "/proc/ffmpeg-api-backups",
            "database_backup_min_interval": 0,
        },
        expect_rc=2,
    )
    assert "Publish the failure" in failed.out
    after = _backup_figures()
    success = "ffmpeg_api_backup_last_success_timestamp_seconds"
    failure = "ffmpeg_api_backup_last_failure_timestamp_seconds"
    assert after[success] == before[success]
    assert after[failure] > after[success] and abs(after[failure] - time.time()) < 120
    wait_for(
        "BackupFailed to fire",
        lambda: _alert_state("BackupFailed") == "firing",
        timeout=90,
        interval=3,
    )

    repair = {"database_backup_min_interval": 0}

    def snapshot():
        return (tree_digest(TEXTFILE_DIR), tree_digest(BACKUP_DIR))

    assert_check_mode_changes_nothing("database_backup.yml", snapshot, extra_vars=repair)
    run = playbook("database_backup.yml", extra_vars=repair)
    assert run.changed >= 2, run.changed_tasks()
    repaired = _backup_figures()
    assert repaired[success] > repaired[failure] == after[failure]
    newest = max(
        n for n in os.listdir(BACKUP_DIR) if re.fullmatch(r"ffmpeg_api_\d{8}_\d{6}\.dump", n)
    )
    stamp = newest.removeprefix("ffmpeg_api_").removesuffix(".dump")
    assert repaired[success] == calendar.timegm(time.strptime(stamp, "%Y%m%d_%H%M%S"))
    wait_for(
        "BackupFailed to clear",
        lambda: _alert_state("BackupFailed") is None,
        timeout=90,
        interval=3,
    )
    # The scheduled run that follows takes no backup and rewrites nothing.
    assert_second_run_changes_nothing("database_backup.yml")
    assert _backup_figures() == repaired
