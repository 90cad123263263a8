"""Event-driven remediation: the Alertmanager event source and the rulebook's alert mapping."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket

import pytest
import yaml
from ansible_collections.ffmpeg_api.ops.extensions.eda.plugins.event_source import alertmanager

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RULEBOOK = os.path.join(REPO, "extensions", "eda", "rulebooks", "alert_remediation.yml")
RULES_TEMPLATE = os.path.join(REPO, "roles", "monitoring", "templates", "ffmpeg_api.rules.yml.j2")
WRAPPER = os.path.join(REPO, "playbooks", "alert_remediation.yml")


def _alert(name="NoWorkers", status="firing", **labels):
    return {
        "status": status,
        "labels": {"alertname": name, "severity": "critical", **labels},
        "annotations": {"summary": "s"},
        "startsAt": "2026-11-29T04:00:00Z",
    }


@pytest.mark.parametrize(
    ("instance", "host"),
    [
        ("api1", "api1"),
        ("api1:8000", "api1"),
        ("10.0.0.5:9100", "10.0.0.5"),
        ("[fd00::5]:9100", "fd00::5"),
        ("fd00::5", "fd00::5"),
        (None, None),
    ],
)
def test_alert_host_is_the_instance_label_without_port(instance, host):
    labels = {} if instance is None else {"instance": instance}
    assert alertmanager.alert_host({"labels": labels}) == host


def test_one_event_per_alert_limited_to_its_host():
    payload = {
        "receiver": "eda",
        "status": "firing",
        "groupKey": "{}:{}",
        "alerts": [_alert("DiskSpaceLow", instance="worker2:9100"), _alert("NoWorkers")],
    }
    events = alertmanager.alert_events(payload, endpoint="alerts")
    assert [e["alert"]["labels"]["alertname"] for e in events] == ["DiskSpaceLow", "NoWorkers"]
    assert events[0]["host"] == "worker2" and events[0]["meta"]["hosts"] == ["worker2"]
    # No instance: no meta.hosts, so the ruleset's hosts (all) limit the run.
    assert events[1]["host"] == "all" and "hosts" not in events[1]["meta"]
    assert events[0]["notification"]["receiver"] == "eda"
    assert events[0]["meta"]["endpoint"] == "alerts"


def test_resolved_alerts_can_be_dropped_and_bad_payloads_are_refused():
    payload = {"alerts": [_alert(status="resolved"), _alert()]}
    assert len(alertmanager.alert_events(payload)) == 2
    assert len(alertmanager.alert_events(payload, skip_resolved=True)) == 1
    with pytest.raises(ValueError):
        alertmanager.alert_events({"status": "firing"})
    with pytest.raises(ValueError):
        alertmanager.alert_events(["not", "a", "notification"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_webhook_server_queues_events_and_checks_the_token():
    aiohttp = pytest.importorskip("aiohttp")
    port = _free_port()

    async def scenario():
        queue: asyncio.Queue = asyncio.Queue()
        server = asyncio.create_task(
            alertmanager.main(queue, {"host": "127.0.0.1", "port": port, "token": "s3cret"})
        )
        url = f"http://127.0.0.1:{port}"
        try:
            async with aiohttp.ClientSession() as session:
                for _ in range(50):
                    try:
                        async with session.get(url + "/health") as resp:
                            if resp.status == 200:
                                break
                    except aiohttp.ClientConnectionError:
                        await asyncio.sleep(0.05)
                body = json.dumps({"alerts": [_alert(instance="api1:8000")]})
                async with session.post(url + "/alerts", data=body) as resp:
                    assert resp.status == 401
                headers = {"Authorization": "Bearer s3cret"}
                async with session.post(url + "/alerts", data="{", headers=headers) as resp:
                    assert resp.status == 400
                async with session.post(url + "/alerts", data=body, headers=headers) as resp:
                    assert resp.status == 202
                    assert (await resp.json()) == {"events": 1}
            return await asyncio.wait_for(queue.get(), 5), queue.qsize()
        finally:
            server.cancel()

    event, left = asyncio.run(scenario())
    assert event["meta"]["hosts"] == ["api1"] and left == 0


def _rulebook_rules():
    with open(RULEBOOK, encoding="utf-8") as fh:
        [ruleset] = yaml.safe_load(fh)
    return ruleset


def _runbook_of_each_alert() -> dict[str, str]:
    """alert name -> playbook named by its runbook annotation, from the rules template."""
    with open(RULES_TEMPLATE, encoding="utf-8") as fh:
        text = fh.read()
    found, current = {}, None
    for line in text.splitlines():
        m = re.match(r"\s*- alert: (\w+)", line)
        if m:
            current = m.group(1)
            continue
        m = re.match(r"\s*runbook: (\S+)", line)
        if m and current:
            found[current] = os.path.basename(m.group(1).strip("\"'"))
    return found


def test_every_rule_runs_the_alerts_own_runbook_throttled_per_alert_and_host():
    ruleset = _rulebook_rules()
    runbooks = _runbook_of_each_alert()
    with open(WRAPPER, encoding="utf-8") as fh:
        wrapper_text = fh.read()
    assert ruleset["hosts"] == "all"
    handled = set()
    for rule in ruleset["rules"]:
        names = re.findall(r'"(\w+)"', rule["condition"].split("alertname", 1)[1])
        assert names, rule["name"]
        assert 'event.alert.status == "firing"' in rule["condition"]
        action = rule["action"]["run_playbook"]
        assert action["name"].endswith("/playbooks/alert_remediation.yml")
        target = action["extra_vars"]["alert_playbook"]
        assert f"'{target}'" in wrapper_text, f"{target} is not allowed by the wrapper"
        for name in names:
            # The alert exists, and the rulebook runs the playbook its runbook annotation names.
            # (Alerts the rules do not define yet are allowed only if listed here.)
            if name in runbooks:
                assert runbooks[name] == target, (name, runbooks[name], target)
            else:
                assert name in {"NoJobsProcessed", "StorageSpaceLow"}, name
            handled.add(name)
        throttle = rule["throttle"]
        assert throttle["once_within"]
        assert throttle["group_by_attributes"] == ["event.alert.labels.alertname", "event.host"]
    assert {"NoWorkers", "QueueBacklog", "DiskSpaceLow", "HighLatencyP95"} <= handled
