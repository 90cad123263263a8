"""The monitoring role's alert and recording rules, dashboards and Alertmanager configuration,
rendered by Ansible from the role's templates with the role's own values: promtool's unit
tests pass, every alert names an existing playbook, every query is one Prometheus accepts."""

from __future__ import annotations

import os
import shutil
import subprocess

import promql
import pytest
import yaml

PLAYBOOKS = os.path.join(promql.REPO, "playbooks")
RULE_TESTS = os.path.join(promql.ROLE, "files", "tests")

# What the issue asks alerts for, each by the alerts that cover it.
REQUIRED_ALERTS = {
    "availability": {"ApiDown", "ApiAllDown", "HAProxyBackendDown"},
    "error rate": {"HighErrorRate"},
    "p95 latency": {"HighLatencyP95"},
    "database down": {"PostgresDown"},
    "redis down": {"RedisDown"},
    "connections": {"PostgresConnectionsHigh", "RedisConnectionsHigh"},
    "memory": {"HighMemory", "RedisMemoryHigh"},
    "cpu": {"HighCpu"},
    "disk": {"DiskSpaceLow"},
    "queue backlog": {"QueueBacklog"},
    "job duration": {"JobDurationHigh"},
    "job failure rate": {"JobFailureRate"},
    "no jobs processed": {"NoJobsProcessed", "NoWorkers"},
    "rate-limit spikes": {"RateLimitSpike"},
    "unauthorized bursts": {"UnauthorizedBurst"},
    "backup failed or old": {"BackupFailed", "BackupTooOld", "BackupMissing"},
    "storage use": {"StorageSpaceLow"},
    "storage backend errors": {"StorageBackendDown"},
}

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool is installed by the monitoring role"
)


@pytest.fixture(scope="module")
def rules_dir(tmp_path_factory):
    """The rules as the role renders them for its unit tests, next to those tests."""
    d = tmp_path_factory.mktemp("rules")
    promql.render(
        "ffmpeg_api.rules.yml.j2", str(d / "ffmpeg_api.yml"), _monitoring_rules_for_tests=True
    )
    for name in os.listdir(RULE_TESTS):
        shutil.copy(os.path.join(RULE_TESTS, name), d / name)
    return d


@pytest.fixture(scope="module")
def rules(rules_dir):
    with open(rules_dir / "ffmpeg_api.yml", encoding="utf-8") as fh:
        return [r for g in yaml.safe_load(fh)["groups"] for r in g["rules"]]


def _alerts(rules):
    return {r["alert"]: r for r in rules if "alert" in r}


@needs_promtool
def test_promtool_unit_tests_pass(rules_dir):
    proc = subprocess.run(
        ["promtool", "test", "rules", str(rules_dir / "ffmpeg_api_test.yml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_promtool
def test_promtool_unit_tests_catch_a_changed_rule(rules_dir, tmp_path):
    """The unit tests depend on the rules: the same tests fail against a changed threshold."""
    text = (rules_dir / "ffmpeg_api.yml").read_text()
    assert "ffmpeg_queue_depth)) > 100" in text
    (tmp_path / "ffmpeg_api.yml").write_text(
        text.replace("ffmpeg_queue_depth)) > 100", "ffmpeg_queue_depth)) > 200")
    )
    shutil.copy(rules_dir / "ffmpeg_api_test.yml", tmp_path)
    proc = subprocess.run(
        ["promtool", "test", "rules", str(tmp_path / "ffmpeg_api_test.yml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1 and "QueueBacklog" in proc.stdout + proc.stderr


def test_every_required_concern_has_its_alerts(rules):
    names = set(_alerts(rules))
    missing = {concern: want - names for concern, want in REQUIRED_ALERTS.items() if want - names}
    assert not missing


def test_every_alert_is_tested_by_promtool(rules):
    with open(os.path.join(RULE_TESTS, "ffmpeg_api_test.yml"), encoding="utf-8") as fh:
        tests = yaml.safe_load(fh)["tests"]
    fired = {
        t["alertname"]
        for case in tests
        for t in case.get("alert_rule_test", [])
        if t.get("exp_alerts")
    }
    untested = set(_alerts(rules)) - fired
    assert not untested, f"alerts no promtool test sees firing: {sorted(untested)}"


def test_every_alert_names_an_existing_playbook(rules):
    for name, rule in _alerts(rules).items():
        runbook = rule["annotations"].get("runbook", "")
        assert runbook.startswith("playbooks/") and runbook.endswith(".yml"), name
        assert os.path.isfile(os.path.join(promql.REPO, runbook)), (
            f"{name}: {runbook} does not exist"
        )
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert {"summary", "description"} <= set(rule["annotations"]), name


def test_for_durations_cover_exactly_the_alerts(rules):
    with open(os.path.join(promql.ROLE, "vars", "main.yml"), encoding="utf-8") as fh:
        durations = yaml.safe_load(fh)["_monitoring_alert_for_defaults"]
    assert set(durations) == set(_alerts(rules))


def test_overrides_change_the_installed_rules_only(tmp_path):
    text = promql.render(
        "ffmpeg_api.rules.yml.j2",
        str(tmp_path / "rules.yml"),
        monitoring_alert_thresholds={"queue_backlog": 5},
        monitoring_alert_for={"QueueBacklog": "15s"},
    )
    backlog = _alerts([r for g in yaml.safe_load(text)["groups"] for r in g["rules"]])[
        "QueueBacklog"
    ]
    assert backlog["expr"].strip().endswith("> 5") and backlog["for"] == "15s"
    text = promql.render(
        "ffmpeg_api.rules.yml.j2",
        str(tmp_path / "for_tests.yml"),
        monitoring_alert_thresholds={"queue_backlog": 5},
        monitoring_alert_for={"QueueBacklog": "15s"},
        _monitoring_rules_for_tests=True,
    )
    backlog = _alerts([r for g in yaml.safe_load(text)["groups"] for r in g["rules"]])[
        "QueueBacklog"
    ]
    assert backlog["expr"].strip().endswith("> 100") and backlog["for"] == "10m"


def test_dashboards_query_the_prometheus_data_source_with_unique_ids():
    exprs = promql.dashboard_exprs()
    titles = {title for _board, title, _expr in exprs}
    for want in (
        "Request rate by route",
        "API latency",
        "5xx ratio",
        "Queue depth",
        "Jobs by status",
        "Job duration p95 by operation",
        "Workers",
        "DB connections",
        "Redis memory",
        "Disk free",
    ):
        assert want in titles
    for _board, title, expr in exprs:
        assert promql.metric_names(expr), f"{title}: {expr} reads no metric"


@needs_promtool
def test_dashboard_queries_parse(tmp_path):
    """Each query as a recording rule: promtool check rules parses it."""
    rules = [
        {"record": f"dashboard:query:{i}", "expr": e}
        for i, (_b, _t, e) in enumerate(promql.dashboard_exprs())
    ]
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    proc = subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_metric_names_of_promql():
    assert promql.metric_names(
        'sum by (route) (rate(http_requests_total{status=~"5.."}[5m])) / on (instance) '
        "max by (instance) (pg_settings_max_connections) > 1e3"
    ) == {"http_requests_total", "pg_settings_max_connections"}
    assert promql.metric_names("time() - absent(a_b) offset 5m and on () vector(0)") == {"a_b"}
    assert promql.metric_names("60 * status:ffmpeg_jobs:rate5m") == {"status:ffmpeg_jobs:rate5m"}


@pytest.mark.skipif(shutil.which("amtool") is None, reason="amtool comes with Alertmanager")
def test_alertmanager_posts_to_every_webhook_with_the_given_timings(tmp_path):
    text = promql.render(
        "alertmanager.yml.j2",
        str(tmp_path / "alertmanager.yml"),
        monitoring_alertmanager_webhook_url="http://127.0.0.1:9999/hook",
        monitoring_alertmanager_webhooks=[
            "http://127.0.0.1:5001/endpoint",
            "http://127.0.0.1:9999/hook",
        ],
        monitoring_alertmanager_group_wait="1s",
        monitoring_alertmanager_group_interval="10s",
    )
    config = yaml.safe_load(text)
    assert config["route"]["group_wait"] == "1s" and config["route"]["group_interval"] == "10s"
    urls = [w["url"] for w in config["receivers"][0]["webhook_configs"]]
    assert urls == ["http://127.0.0.1:9999/hook", "http://127.0.0.1:5001/endpoint"]
    proc = subprocess.run(
        ["amtool", "check-config", str(tmp_path / "alertmanager.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    none = yaml.safe_load(promql.render("alertmanager.yml.j2", str(tmp_path / "none.yml")))
    assert "webhook_configs" not in none["receivers"][0]
