#!/usr/bin/python
# Copyright: FFmpeg API Ops team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: incident
short_description: Keep an incident record and its Markdown report
version_added: 1.0.0
description:
  - Creates or updates the record of one incident (a JSON document) and renders the runbook's
    incident report template from it (C(<id>.md) next to C(<id>.json)).
  - The timeline is built from runbook run records (written by the C(ffmpeg_api.ops.runbook_record)
    callback). Every task of the run that changed something or failed becomes a line. Tasks
    that changed nothing add nothing, so running a remediation again leaves the report as it is.
  - "Usually run on the controller: C(delegate_to: localhost) and C(run_once: true)."
options:
  id:
    description: Incident identifier, e.g. C(INC-20261129-api-outage); names the files.
    type: str
    required: true
  dir:
    description: Directory of the incident records (created if missing).
    type: path
    required: true
  state:
    description:
      - C(open) creates the record or updates its fields and timeline.
      - C(resolved) also stamps the resolution time (once) and marks it resolved.
      - A resolved incident stays resolved (running the remediation again does not reopen it);
        open a new incident id for a recurrence.
    type: str
    choices: [open, resolved]
    default: open
  severity:
    description: Severity level of the runbook (SEV1 complete outage ... SEV4 cosmetic).
    type: str
    choices: [SEV1, SEV2, SEV3, SEV4]
  title:
    description: One line naming the incident.
    type: str
  summary:
    description: What happened, briefly.
    type: str
  root_cause:
    description: Why it happened.
    type: str
  resolution:
    description: What was done to fix it.
    type: str
  impact:
    description: Impact figures.
    type: dict
    suboptions:
      summary:
        description: One line, e.g. C(all requests failed for 12 minutes).
        type: str
      users_affected:
        description: Number (or estimate) of users affected.
        type: str
      requests_failed:
        description: Number (or share) of failed requests.
        type: str
      data_loss:
        description: Whether data was lost.
        type: str
  lessons_learned:
    description: Lessons, in order.
    type: list
    elements: str
  action_items:
    description: Follow-up actions.
    type: list
    elements: str
  timeline_file:
    description:
      - A run record to take timeline events from (tasks that changed something or failed).
      - The callback exports the current run's record as C(FFMPEG_API_RUNBOOK_RECORD); pass
        C("{{ lookup('ansible.builtin.env', 'FFMPEG_API_RUNBOOK_RECORD') }}").
      - Empty or missing is allowed (no events are added).
    type: path
  events:
    description:
      - Events to add by hand (detection, acknowledgement). Each is stamped with the current time
        the first time it is added; an event already in the timeline is not added again.
    type: list
    elements: str
attributes:
  platform:
    platforms: posix
  check_mode:
    support: full
  diff_mode:
    support: full
  idempotent:
    support: full
    description: Whether a second run with the same inputs changes nothing.
    details: The same inputs and no new changed tasks in the run record leave the files untouched.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
author:
  - FFmpeg API Ops team (@ffmpeg-api-ops)
"""

EXAMPLES = r"""
- name: Open the incident
  ffmpeg_api.ops.incident:
    id: INC-20261129-outage
    dir: /var/lib/ffmpeg-api-ops/incidents
    severity: SEV1
    title: FFmpeg API complete outage
    events: [Initial detection by the availability alert]
  delegate_to: localhost
  run_once: true

- name: Close it with the timeline of this run
  ffmpeg_api.ops.incident:
    id: INC-20261129-outage
    dir: /var/lib/ffmpeg-api-ops/incidents
    state: resolved
    resolution: Rolled back to the previous release; database untouched.
    timeline_file: "{{ lookup('ansible.builtin.env', 'FFMPEG_API_RUNBOOK_RECORD') }}"
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
record_path:
  description: The JSON record.
  returned: always
  type: str
  sample: /var/lib/ffmpeg-api-ops/incidents/INC-20261129-outage.json
report_path:
  description: The Markdown report.
  returned: always
  type: str
  sample: /var/lib/ffmpeg-api-ops/incidents/INC-20261129-outage.md
record:
  description: The record after the change (what check mode would write).
  returned: always
  type: dict
events_added:
  description: Number of timeline events this call added.
  returned: always
  type: int
  sample: 4
"""

import datetime
import json
import os
import re
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.ffmpeg_api.ops.plugins.module_utils.incident import (
    events_from_record,
    merge_timeline,
    read_run_record,
    render_markdown,
)

VALID_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
TEXT_FIELDS = ("severity", "title", "summary", "root_cause", "resolution")
# The incident tasks themselves are bookkeeping, not events of the incident.
OWN_ACTIONS = ("ffmpeg_api.ops.incident", "ffmpeg_api.ops.incident_notify", "incident")


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _write_atomic(path, text):
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".incident-")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o640)
        os.rename(tmp, path)
    except Exception:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main():
    module = AnsibleModule(
        argument_spec=dict(
            id=dict(type="str", required=True),
            dir=dict(type="path", required=True),
            state=dict(type="str", choices=["open", "resolved"], default="open"),
            severity=dict(type="str", choices=["SEV1", "SEV2", "SEV3", "SEV4"]),
            title=dict(type="str"),
            summary=dict(type="str"),
            root_cause=dict(type="str"),
            resolution=dict(type="str"),
            impact=dict(
                type="dict",
                options=dict(
                    summary=dict(type="str"),
                    users_affected=dict(type="str"),
                    requests_failed=dict(type="str"),
                    data_loss=dict(type="str"),
                ),
            ),
            lessons_learned=dict(type="list", elements="str"),
            action_items=dict(type="list", elements="str"),
            timeline_file=dict(type="path"),
            events=dict(type="list", elements="str"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    if not VALID_ID.match(p["id"]):
        module.fail_json(msg="incident id %r: use letters, digits, '.', '_' and '-' only" % p["id"])
    record_path = os.path.join(p["dir"], p["id"] + ".json")
    report_path = os.path.join(p["dir"], p["id"] + ".md")

    existing = None
    if os.path.exists(record_path):
        try:
            with open(record_path) as fh:
                existing = json.load(fh)
        except ValueError as exc:
            module.fail_json(msg="incident record %s is not valid JSON: %s" % (record_path, exc))
    now = _now()
    record = dict(existing or {"id": p["id"], "opened_at": now, "status": "open", "timeline": []})
    if existing is None and not p["severity"]:
        module.fail_json(msg="a new incident needs a severity (SEV1 ... SEV4)")
    for field in TEXT_FIELDS:
        if p[field] is not None:
            record[field] = p[field]
    if p["impact"]:
        impact = dict(record.get("impact") or {})
        impact.update(dict((k, v) for k, v in p["impact"].items() if v is not None))
        record["impact"] = impact
    for field in ("lessons_learned", "action_items"):
        if p[field] is not None:
            record[field] = p[field]

    timeline = list(record.get("timeline") or [])
    before_count = len(timeline)
    if p["events"]:
        texts = set(e.get("text") for e in timeline)
        manual = [{"time": now, "text": t} for t in p["events"] if t not in texts]
        timeline = merge_timeline(timeline, manual)
    runs = list(record.get("runs") or [])
    if p["timeline_file"] and os.path.exists(p["timeline_file"]):
        new_events = events_from_record(read_run_record(p["timeline_file"]), OWN_ACTIONS)
        timeline = merge_timeline(timeline, new_events)
        if new_events and p["timeline_file"] not in runs:
            runs.append(p["timeline_file"])
    record["timeline"] = timeline
    if runs:
        record["runs"] = runs
    if p["state"] == "resolved" and record.get("status") != "resolved":
        record["status"] = "resolved"
        record["resolved_at"] = now
        record["timeline"] = merge_timeline(timeline, [{"time": now, "text": "Service restored"}])

    report = render_markdown(record)
    old_report = ""
    if os.path.exists(report_path):
        with open(report_path) as fh:
            old_report = fh.read()
    changed = existing != record or old_report != report
    result = dict(
        changed=changed,
        record_path=record_path,
        report_path=report_path,
        record=record,
        events_added=len(record["timeline"]) - before_count,
    )
    if module._diff:
        result["diff"] = dict(
            before=old_report, after=report, before_header=report_path, after_header=report_path
        )
    if changed and not module.check_mode:
        if not os.path.isdir(p["dir"]):
            os.makedirs(p["dir"], mode=0o750)
        _write_atomic(record_path, json.dumps(record, indent=2, sort_keys=True) + "\n")
        _write_atomic(report_path, report)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
