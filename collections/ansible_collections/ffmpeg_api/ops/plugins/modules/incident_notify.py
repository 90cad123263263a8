#!/usr/bin/python
# Copyright: FFmpeg API Ops team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: incident_notify
short_description: Notify a webhook of an incident event, once
version_added: 1.0.0
description:
  - POSTs a JSON message to a webhook, with the fields C(text), C(incident), C(event) and
    C(severity) (Slack- and Mattermost-compatible thanks to C(text)).
  - Each (incident, event) pair is sent once. The sent events are kept in
    C(<dir>/<id>.notified.json), so a re-run of the playbook does not page anyone again.
options:
  url:
    description: The webhook URL (often carries a token, hence never logged).
    type: str
    required: true
  id:
    description: Incident identifier (see M(ffmpeg_api.ops.incident)).
    type: str
    required: true
  dir:
    description: Directory of the incident records, where the sent-events ledger lives.
    type: path
    required: true
  event:
    description: What happened, as a short key, e.g. C(opened), C(mitigated), C(resolved).
    type: str
    required: true
  text:
    description: The human text of the notification.
    type: str
    required: true
  severity:
    description: Severity level to include.
    type: str
    choices: [SEV1, SEV2, SEV3, SEV4, RESOLVED]
  headers:
    description: Extra HTTP headers (e.g. an authorization token).
    type: dict
  timeout:
    description: Seconds to wait for the webhook.
    type: int
    default: 10
  validate_certs:
    description: Verify the webhook's TLS certificate.
    type: bool
    default: true
attributes:
  platform:
    platforms: posix
  check_mode:
    support: full
  diff_mode:
    support: none
  idempotent:
    support: full
    description: Whether the module sends a notification again when run again.
    details: An event already sent for this incident is not sent again.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
author:
  - FFmpeg API Ops team (@ffmpeg-api-ops)
"""

EXAMPLES = r"""
- name: Page the on-call channel
  ffmpeg_api.ops.incident_notify:
    url: "{{ incident_webhook_url }}"
    id: INC-20261129-outage
    dir: /var/lib/ffmpeg-api-ops/incidents
    event: opened
    severity: SEV1
    text: "SEV1: FFmpeg API complete outage"
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
sent:
  description: Whether this call sent the notification.
  returned: always
  type: bool
status:
  description: HTTP status of the webhook's answer (when sent).
  returned: when sent
  type: int
  sample: 200
"""

import datetime
import json
import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import fetch_url


def main():
    module = AnsibleModule(
        argument_spec=dict(
            url=dict(type="str", required=True, no_log=True),
            id=dict(type="str", required=True),
            dir=dict(type="path", required=True),
            event=dict(type="str", required=True),
            text=dict(type="str", required=True),
            severity=dict(type="str", choices=["SEV1", "SEV2", "SEV3", "SEV4", "RESOLVED"]),
            headers=dict(type="dict", no_log=True),
            timeout=dict(type="int", default=10),
            validate_certs=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    p = module.params
    if "/" in p["id"] or p["id"].startswith("."):
        module.fail_json(msg="incident id %r is not a plain name" % p["id"])
    ledger_path = os.path.join(p["dir"], p["id"] + ".notified.json")
    ledger = {}
    if os.path.exists(ledger_path):
        try:
            with open(ledger_path) as fh:
                ledger = json.load(fh)
        except ValueError as exc:
            module.fail_json(
                msg="notification ledger %s is not valid JSON: %s" % (ledger_path, exc)
            )
    if p["event"] in ledger:
        module.exit_json(changed=False, sent=False, msg="already sent at %s" % ledger[p["event"]])
    if module.check_mode:
        module.exit_json(changed=True, sent=False, msg="would notify: %s" % p["text"])

    payload = {
        "text": p["text"],
        "incident": p["id"],
        "event": p["event"],
        "severity": p["severity"],
    }
    headers = {"Content-Type": "application/json"}
    headers.update(p["headers"] or {})
    _resp, info = fetch_url(
        module,
        p["url"],
        data=json.dumps(payload),
        headers=headers,
        method="POST",
        timeout=p["timeout"],
    )
    status = info.get("status", -1)
    if status < 200 or status >= 300:
        module.fail_json(
            msg="the webhook answered %s: %s" % (status, info.get("msg", "")), status=status
        )
    ledger[p["event"]] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    if not os.path.isdir(p["dir"]):
        os.makedirs(p["dir"], mode=0o750)
    tmp = ledger_path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(ledger, fh, indent=2, sort_keys=True)
    os.rename(tmp, ledger_path)
    module.exit_json(changed=True, sent=True, status=status)


if __name__ == "__main__":
    main()
