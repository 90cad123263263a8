"""Event-driven remediation: a real alert in the deployed Prometheus, delivered by the deployed
Alertmanager to ansible-rulebook (extensions/eda/run), repairs the fault it is about.

Fault: every RQ worker stopped (supervisorctl stop ffmpeg-api-worker:), which the NoWorkers
alert reports. To keep the test short, Prometheus gets a test-only copy of the deployed NoWorkers
rule with `for: 0s`, evaluated every second, and scrapes the API every second; Alertmanager
routes the copy (label eda_test) to the rulebook with no group wait. Both configuration files
are put back byte for byte and reloaded afterwards, so the next deployment changes nothing.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request

import pytest
import yaml
from runbook_helpers import REPO, ansible_env, http, playbook, wait_for

from servers import free_port

PROMETHEUS_CONFIG = "/etc/prometheus/prometheus.yml"
ALERTMANAGER_CONFIG = "/etc/prometheus/alertmanager.yml"
DEPLOYED_RULES = "/etc/prometheus/rules/ffmpeg_api.yml"
TEST_RULES = "/etc/prometheus/rules/eda_test.yml"
PROMETHEUS = "http://127.0.0.1:9090"
ALERTMANAGER = "http://127.0.0.1:9093"
WORKERS = "ffmpeg-api-worker:"
ALERT = "NoWorkers"
GATE_SECONDS = 8


def _post(url: str, body: dict | None = None) -> int:
    data = json.dumps(body).encode() if body is not None else b""
    req = urllib.request.Request(
        url, data=data, method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def _workers() -> dict[str, str]:
    out = subprocess.run(
        ["supervisorctl", "status", WORKERS], capture_output=True, text=True, check=False
    ).stdout
    return {line.split()[0]: line.split()[1] for line in out.splitlines() if line.strip()}


def _workers_running() -> bool:
    states = _workers()
    return bool(states) and all(s == "RUNNING" for s in states.values())


def _no_worker_running() -> bool:
    states = _workers()
    return bool(states) and all(s != "RUNNING" for s in states.values())


def _healthy() -> bool:
    try:
        return http("GET", "/health")[0] == 200
    except OSError:
        return False


def _test_rule(alert: str, marker: str, threshold: str | None = None) -> dict:
    """A deployed rule, firing at once and marked for the test route; with threshold, its
    comparison's right-hand side replaced (a condition the test can meet at once)."""
    with open(DEPLOYED_RULES, encoding="utf-8") as fh:
        deployed = yaml.safe_load(fh)
    rule = next(r for g in deployed["groups"] for r in g["rules"] if r.get("alert") == alert)
    expr = rule["expr"]
    if threshold is not None:
        expr, replaced = re.subn(r"([<>]=?)\s*[0-9.e+-]+\s*$", rf"\1 {threshold}", expr.strip())
        assert replaced == 1, f"no threshold found in {alert}: {rule['expr']}"
    # Prometheus (2.42) drops the alerts it sends in the seconds after a reload, before its
    # Alertmanager discovery has synced again, and resends only after a minute: the copy
    # starts firing a few seconds after the reload.
    expr = f"({expr}) and on() (vector(time()) > {time.time() + GATE_SECONDS:.0f})"
    labels = {**rule.get("labels", {}), "eda_test": marker}
    rule = {**rule, "expr": expr, "for": "0s", "labels": labels}
    return {"groups": [{"name": "eda_test", "interval": "1s", "rules": [rule]}]}


def _firing_alerts(name: str, marker: str) -> list[dict]:
    alerts = _get_json(f"{PROMETHEUS}/api/v1/alerts")["data"]["alerts"]
    return [
        a
        for a in alerts
        if a["labels"].get("alertname") == name
        and a["labels"].get("eda_test") == marker
        and a["state"] == "firing"
    ]


def _firing(name: str, marker: str) -> bool:
    return bool(_firing_alerts(name, marker))


@pytest.fixture
def alert_pipeline(stack):
    """Prometheus and Alertmanager wired to a rulebook on a free port; everything put back."""
    port = free_port()
    # Unique per run: Alertmanager remembers what it notified (per receiver and group) for
    # repeat_interval, and an alert of an earlier run may still be active there.
    marker = f"run-{os.getpid()}-{port}"
    workdir = tempfile.mkdtemp(prefix="eda-test-")
    records, incidents = os.path.join(workdir, "records"), os.path.join(workdir, "incidents")
    saved = {p: open(p, "rb").read() for p in (PROMETHEUS_CONFIG, ALERTMANAGER_CONFIG)}
    log = open(os.path.join(workdir, "rulebook.log"), "w")
    rulebook = subprocess.Popen(
        [os.path.join(REPO, "extensions", "eda", "run"), "--print-events"],
        env=ansible_env(
            EDA_ALERTMANAGER_PORT=str(port),
            EDA_INCIDENT_DIR=incidents,
            FFMPEG_API_RUNBOOK_RECORD_DIR=records,
            EDA_STUCK_OLDER_THAN="1h",
        ),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def arm(alert: str, threshold: str | None = None):
        """Load the test rule and route it to the rulebook (the moment detection starts)."""
        with open(TEST_RULES, "w", encoding="utf-8") as fh:
            yaml.safe_dump(_test_rule(alert, marker, threshold), fh)
        os.chmod(TEST_RULES, 0o644)
        prom = yaml.safe_load(saved[PROMETHEUS_CONFIG])
        prom["rule_files"] = [*(prom.get("rule_files") or []), TEST_RULES]
        for job in prom["scrape_configs"]:
            if job["job_name"] == "ffmpeg_api":
                job["scrape_interval"] = "1s"
                job["scrape_timeout"] = "1s"
        with open(PROMETHEUS_CONFIG, "w", encoding="utf-8") as fh:
            yaml.safe_dump(prom, fh)
        am = yaml.safe_load(saved[ALERTMANAGER_CONFIG])
        am["receivers"].append(
            {
                "name": f"eda-test-{marker}",
                "webhook_configs": [
                    {"url": f"http://127.0.0.1:{port}/alerts", "send_resolved": True}
                ],
            }
        )
        am["route"]["routes"] = [
            {
                "receiver": f"eda-test-{marker}",
                "matchers": [f'eda_test="{marker}"'],
                "group_wait": "0s",
                "group_interval": "1s",
                "repeat_interval": "1h",
            },
            *(am["route"].get("routes") or []),
        ]
        with open(ALERTMANAGER_CONFIG, "w", encoding="utf-8") as fh:
            yaml.safe_dump(am, fh)
        subprocess.run(["service", "prometheus", "reload"], check=True, capture_output=True)
        assert _post(f"{ALERTMANAGER}/-/reload") == 200

    def runs() -> list[str]:
        return sorted(glob.glob(os.path.join(records, "*.jsonl")))

    try:
        wait_for(
            "the rulebook's webhook",
            lambda: _up(f"http://127.0.0.1:{port}/health"),
            timeout=60,
            interval=0.5,
        )
        yield {
            "arm": arm,
            "webhook": f"http://127.0.0.1:{port}/alerts",
            "runs": runs,
            "incidents": incidents,
            "log": log.name,
            "marker": marker,
        }
    finally:
        os.killpg(rulebook.pid, signal.SIGTERM)
        try:
            rulebook.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(rulebook.pid, signal.SIGKILL)
            rulebook.wait()
        log.close()
        for path, content in saved.items():
            with open(path, "wb") as fh:
                fh.write(content)
        if os.path.exists(TEST_RULES):
            os.remove(TEST_RULES)
        subprocess.run(["service", "prometheus", "reload"], check=False, capture_output=True)
        _post(f"{ALERTMANAGER}/-/reload")
        subprocess.run(["supervisorctl", "start", WORKERS], capture_output=True, check=False)
        shutil.rmtree(workdir, ignore_errors=True)


def _resolved_incidents(directory: str) -> list[dict]:
    found = []
    for path in glob.glob(os.path.join(directory, "*.json")):
        with open(path, encoding="utf-8") as fh:
            record = json.load(fh)
        if record.get("status") == "resolved":
            found.append({**record, "_path": path})
    return found


def _up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def test_workers_down_alert_restarts_workers_with_an_incident_record(alert_pipeline):
    assert _workers_running() and _healthy(), "the stack must start healthy"

    # The fault.
    fault_at = time.monotonic()
    subprocess.run(["supervisorctl", "stop", WORKERS], check=True, capture_output=True)
    assert _no_worker_running()

    # What the rulebook would run, previewed: nothing changes, no incident is written.
    remediation = {
        "alert_name": ALERT,
        "alert_playbook": "stuck_jobs.yml",
        "alert_severity": "critical",
        "stuck_jobs_restart_workers": True,
        "incident_dir": alert_pipeline["incidents"],
    }
    preview = playbook("alert_remediation.yml", extra_vars=remediation, check=True)
    assert preview.changed > 0, "check mode must report the workers it would start"
    assert _no_worker_running(), "check mode started workers"
    assert not os.path.exists(alert_pipeline["incidents"]), "check mode wrote an incident"

    # The alert: Prometheus fires, Alertmanager delivers, the rulebook runs the remediation.
    alert_pipeline["arm"](ALERT)
    armed_at = time.monotonic()
    wait_for(
        f"{ALERT} firing in Prometheus",
        lambda: _firing(ALERT, alert_pipeline["marker"]),
        timeout=45,
        interval=0.5,
    )
    fired_at = time.monotonic()
    wait_for("the rulebook to start a remediation", lambda: alert_pipeline["runs"](), timeout=45)
    started_at = time.monotonic()
    wait_for(
        "the workers running and the incident report written",
        lambda: _workers_running() and bool(_resolved_incidents(alert_pipeline["incidents"])),
        timeout=150,
        interval=1,
    )
    wait_for("health 200 through HAProxy", _healthy, timeout=30)
    repaired_at = time.monotonic()
    print(
        f"\nEDA {ALERT}: fault -> repaired {repaired_at - fault_at:.1f}s "
        f"(check-mode preview included); alert armed -> firing {fired_at - armed_at:.1f}s, "
        f"-> playbook started {started_at - fired_at:.1f}s, "
        f"-> repaired {repaired_at - started_at:.1f}s; "
        f"armed -> repaired {repaired_at - armed_at:.1f}s"
    )

    # The incident record: severity, the alert, the timeline from the run record.
    [record] = _resolved_incidents(alert_pipeline["incidents"])
    record_path = record.pop("_path")
    text = json.dumps(record)
    with open(record_path[: -len(".json")] + ".md", encoding="utf-8") as fh:
        report = fh.read()
    print(report)
    assert record.get("severity") == "SEV2", record
    assert ALERT in os.path.basename(record_path) and ALERT in text
    assert "stuck_jobs.yml" in text
    assert "worker" in report.lower() and "restart" in report.lower(), report

    # The run was limited to the alerting host: NoWorkers has no instance label, so "all".
    [run_record] = alert_pipeline["runs"]()
    with open(run_record, encoding="utf-8") as fh:
        start = json.loads(fh.readline())
    assert start.get("playbook", "").endswith("alert_remediation.yml"), start
    assert start.get("limit") == "all", start

    # An alert storm (Alertmanager retries, the same alert over and over) runs nothing more.
    payload = {
        "receiver": "eda-test",
        "status": "firing",
        "alerts": [
            {
                "status": "firing",
                "labels": {
                    "alertname": ALERT,
                    "severity": "critical",
                    "eda_test": alert_pipeline["marker"],
                },
                "annotations": {"summary": "No RQ worker is alive"},
                "startsAt": "2026-01-01T00:00:00Z",
            }
        ],
    }
    for _ in range(5):
        assert _post(alert_pipeline["webhook"], payload) == 202
    time.sleep(5)
    with open(alert_pipeline["log"], encoding="utf-8") as fh:
        assert len(alert_pipeline["runs"]()) == 1, fh.read()[-4000:]
    assert _workers_running() and _healthy()


def test_disk_space_alert_cleans_storage_on_the_alerting_host_once(alert_pipeline, stack):
    """DiskSpaceLow (a copy whose threshold every filesystem meets: one alert per filesystem of
    the host: a storm on a host with several) runs storage_full.yml once, limited to the
    alerting host."""
    stale = os.path.join(stack["STORAGE_ROOT"], "tmp", f"eda-{alert_pipeline['marker']}", "part")
    os.makedirs(os.path.dirname(stale), exist_ok=True)
    with open(stale, "wb") as fh:
        fh.write(b"x" * 4096)
    old = time.time() - 3 * 86400
    os.utime(stale, (old, old))
    os.utime(os.path.dirname(stale), (old, old))
    try:
        fault_at = time.monotonic()
        preview = playbook(
            "alert_remediation.yml",
            extra_vars={
                "alert_name": "DiskSpaceLow",
                "alert_playbook": "storage_full.yml",
                "alert_host": "localhost",
                "incident_dir": alert_pipeline["incidents"],
            },
            check=True,
            timeout=300,
        )
        assert preview.changed > 0, "check mode must report the stale temp entry it would remove"
        assert os.path.exists(stale), "check mode removed the stale temp entry"
        assert not os.path.exists(alert_pipeline["incidents"]), "check mode wrote an incident"

        alert_pipeline["arm"]("DiskSpaceLow", threshold="1.01")
        armed_at = time.monotonic()
        marker = alert_pipeline["marker"]
        wait_for("DiskSpaceLow firing", lambda: _firing("DiskSpaceLow", marker), timeout=45)
        fired_at = time.monotonic()
        firing = _firing_alerts("DiskSpaceLow", marker)
        assert {a["labels"].get("instance") for a in firing} == {"localhost"}, firing
        wait_for(
            "the rulebook to start a remediation", lambda: alert_pipeline["runs"](), timeout=60
        )
        started_at = time.monotonic()
        wait_for(
            "the stale temp entry removed and the incident resolved",
            lambda: (
                not os.path.exists(os.path.dirname(stale))
                and bool(_resolved_incidents(alert_pipeline["incidents"]))
            ),
            timeout=150,
        )
        repaired_at = time.monotonic()
        print(
            f"\nEDA DiskSpaceLow ({len(firing)} alert(s), one per filesystem): "
            f"fault -> repaired {repaired_at - fault_at:.1f}s (check-mode preview included); "
            f"armed -> firing {fired_at - armed_at:.1f}s, -> playbook started "
            f"{started_at - fired_at:.1f}s, -> repaired {repaired_at - started_at:.1f}s; "
            f"armed -> repaired {repaired_at - armed_at:.1f}s"
        )
        # Limited to the alerting host (the instance label), and run once for the storm.
        time.sleep(3)
        runs = alert_pipeline["runs"]()
        with open(alert_pipeline["log"], encoding="utf-8") as fh:
            assert len(runs) == 1, fh.read()[-4000:]
        with open(runs[0], encoding="utf-8") as fh:
            start = json.loads(fh.readline())
        assert start.get("limit") == "localhost", start
        [record] = _resolved_incidents(alert_pipeline["incidents"])
        assert record.get("severity") == "SEV3", record
        assert "storage_full.yml" in json.dumps(record)
        assert _healthy()
    finally:
        shutil.rmtree(os.path.dirname(stale), ignore_errors=True)
