# Copyright: FFmpeg API Ops team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Incident records: a JSON document per incident and its Markdown report.

The timeline is built from runbook run records (see the runbook_record callback): every task
that changed something or failed becomes one line. Tasks that changed nothing are not events,
so running a remediation a second time adds nothing and leaves the report as it was.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

SEVERITIES = ("SEV1", "SEV2", "SEV3", "SEV4")


def read_run_record(path):
    """The entries of one run record (JSON Lines); unreadable lines are skipped."""
    entries = []
    with open(path, "r") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                entries.append(json.loads(line))
            except ValueError:
                continue
    return entries


def events_from_record(entries, exclude_actions=()):
    """Timeline events of a run: tasks that changed something or failed, outside check mode."""
    if any(e.get("event") == "start" and e.get("check_mode") for e in entries):
        return []
    events = []
    for e in entries:
        if e.get("event") != "task" or e.get("check_mode"):
            continue
        if e.get("action") in exclude_actions:
            continue
        if e.get("status") in ("failed", "unreachable"):
            verb = "FAILED"
        elif e.get("changed"):
            verb = "done"
        else:
            continue
        text = "%s on %s: %s" % (e.get("task", "?"), e.get("host", "?"), verb)
        if e.get("msg") and verb == "FAILED":
            text += " (%s)" % e["msg"]
        events.append({"time": e.get("time", ""), "text": text})
    return events


def merge_timeline(existing, new_events):
    """existing + the new events not already present, ordered by time (stable)."""
    seen = set((e.get("time"), e.get("text")) for e in existing)
    merged = list(existing)
    for e in new_events:
        key = (e.get("time"), e.get("text"))
        if key not in seen:
            seen.add(key)
            merged.append({"time": e.get("time", ""), "text": e.get("text", "")})
    return sorted(merged, key=lambda e: e.get("time") or "")


def _lines(value, bullet):
    if not value:
        return ["%s[none recorded]" % bullet]
    if isinstance(value, str):
        return ["%s%s" % (bullet, value)]
    return ["%s%s" % (bullet, v) for v in value]


def render_markdown(record):
    """The runbook's incident report template, filled from a record."""
    impact = record.get("impact") or {}
    end = record.get("resolved_at") or "ongoing"
    lines = [
        "# Incident Report: %s" % record["id"],
        "",
        "**Title:** %s" % (record.get("title") or record["id"]),
        "**Date:** %s" % (record.get("opened_at") or "")[:10],
        "**Severity:** %s" % record.get("severity", ""),
        "**Status:** %s" % record.get("status", "open"),
        "**Duration:** %s - %s" % (record.get("opened_at", ""), end),
        "**Impact:** %s" % (impact.get("summary") or "[not assessed]"),
        "",
        "## Summary",
        record.get("summary") or "[not written yet]",
        "",
        "## Timeline",
    ]
    timeline = record.get("timeline") or []
    if timeline:
        lines.extend("- **%s** - %s" % (e.get("time", ""), e.get("text", "")) for e in timeline)
    else:
        lines.append("- [no events recorded]")
    lines += [
        "",
        "## Root Cause",
        record.get("root_cause") or "[under investigation]",
        "",
        "## Resolution",
        record.get("resolution") or "[not resolved yet]",
        "",
        "## Impact",
        "- **Users affected:** %s" % impact.get("users_affected", "[unknown]"),
        "- **Requests failed:** %s" % impact.get("requests_failed", "[unknown]"),
        "- **Data loss:** %s" % impact.get("data_loss", "[unknown]"),
        "",
        "## Lessons Learned",
    ]
    lessons = record.get("lessons_learned") or []
    if lessons:
        lines.extend("%d. %s" % (i, v) for i, v in enumerate(lessons, 1))
    else:
        lines.append("1. [to be discussed in the review]")
    lines += ["", "## Action Items"]
    lines.extend(_lines(record.get("action_items"), "- [ ] "))
    runs = record.get("runs") or []
    if runs:
        lines += ["", "## Runbook runs"]
        lines.extend("- `%s`" % r for r in runs)
    return "\n".join(lines) + "\n"
