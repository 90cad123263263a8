"""Incident records: timeline from run records, merge without duplicates, the report template."""

import pytest
from ansible_collections.ffmpeg_api.ops.plugins.module_utils import incident
from ansible_collections.ffmpeg_api.ops.plugins.module_utils.service_cli import (
    ServiceCLIError,
    build_argv,
    parse_output,
)

RUN = [
    {"event": "start", "check_mode": False, "time": "2026-11-29T03:00:00+00:00"},
    {"event": "task", "time": "t1", "host": "api1", "task": "Read health", "status": "ok"},
    {"event": "task", "time": "t2", "host": "api1", "task": "Restart API", "status": "ok",
     "changed": True, "action": "community.general.supervisorctl"},
    {"event": "task", "time": "t3", "host": "db1", "task": "Restore", "status": "failed",
     "msg": "pg_restore: error"},
    {"event": "task", "time": "t4", "host": "api1", "task": "Ignored", "status": "ignored"},
    {"event": "task", "time": "t5", "host": "lo", "task": "Record", "status": "ok",
     "changed": True, "action": "ffmpeg_api.ops.incident"},
    {"event": "stats", "time": "t6", "hosts": {}},
]  # fmt: skip


def test_only_changes_and_failures_become_events():
    events = incident.events_from_record(RUN, ("ffmpeg_api.ops.incident",))
    assert [e["time"] for e in events] == ["t2", "t3"]
    assert events[0]["text"] == "Restart API on api1: done"
    assert events[1]["text"] == "Restore on db1: FAILED (pg_restore: error)"


def test_a_check_mode_run_has_no_events():
    preview = [{**RUN[0], "check_mode": True}, *RUN[1:]]
    assert incident.events_from_record(preview) == []


def test_merge_adds_each_event_once_in_time_order():
    existing = [{"time": "t2", "text": "b"}]
    merged = incident.merge_timeline(existing, [{"time": "t1", "text": "a"}, existing[0]])
    assert merged == [{"time": "t1", "text": "a"}, {"time": "t2", "text": "b"}]
    assert incident.merge_timeline(merged, merged) == merged


def test_report_follows_the_runbook_template():
    report = incident.render_markdown(
        {
            "id": "INC-1",
            "severity": "SEV1",
            "opened_at": "2026-11-29T03:00:00+00:00",
            "timeline": [{"time": "t2", "text": "Restart API on api1: done"}],
            "impact": {"requests_failed": "12%"},
            "action_items": ["alert on queue depth"],
        }
    )
    for heading in ("## Summary", "## Timeline", "## Root Cause", "## Resolution", "## Impact",
                    "## Lessons Learned", "## Action Items"):  # fmt: skip
        assert heading in report
    assert report.startswith("# Incident Report: INC-1\n")
    assert "**Severity:** SEV1" in report and "**Date:** 2026-11-29" in report
    assert "- **t2** - Restart API on api1: done" in report
    assert "- **Requests failed:** 12%" in report
    assert "- [ ] alert on queue depth" in report
    assert "ongoing" in report


def test_cli_argv_drops_unset_options_and_previews_with_dry_run():
    argv = build_argv("/cli", ["jobs", "requeue-stuck", "--older-than", "2h", None, False], True)
    assert argv == ["/cli", "jobs", "requeue-stuck", "--older-than", "2h", "--json", "--dry-run"]


def test_cli_failure_carries_the_service_message():
    out = '{"failed": true, "error": {"code": "not_found", "message": "key 7 does not exist"}}'
    with pytest.raises(ServiceCLIError, match="key 7 does not exist") as err:
        parse_output(["/cli", "keys", "revoke", "7"], 1, out, "error: key 7 does not exist")
    assert err.value.rc == 1
    with pytest.raises(ServiceCLIError, match="no JSON"):
        parse_output(["/cli", "jobs", "stats"], 0, "not json", "")
    assert parse_output(["/cli"], 0, '{"changed": false}', "") == {"changed": False}
