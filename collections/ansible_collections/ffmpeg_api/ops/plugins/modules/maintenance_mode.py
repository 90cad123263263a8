#!/usr/bin/python
# Copyright: FFmpeg API Ops team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: maintenance_mode
short_description: Switch the FFmpeg API's maintenance mode on or off
version_added: 1.0.0
description:
  - In maintenance mode every API endpoint except health, metrics, the docs and the admin
    maintenance endpoints answers C(503) with C(Retry-After). The switch lives in Redis, so one
    call changes every API host at once.
  - Wraps C(ffmpeg-api maintenance status|on|off).
options:
  state:
    description: Whether maintenance mode should be on or off.
    type: str
    choices: ["on", "off"]
    required: true
  reason:
    description:
      - Why, shown by the status command and the health check (e.g. C(database restore)).
      - Only used with I(state=on). Left unset, the reason of a mode that is already on is kept.
    type: str
  ttl:
    description:
      - Lift maintenance mode by itself after this long (C(90), C(30m), C(2h)), so a forgotten
        switch cannot keep the service down.
      - Only used with I(state=on), and only when this module switches the mode on, changes its
        reason, or finds it on without any expiry. A mode already on with the same reason and
        an expiry is left alone (C(changed=false)); its remaining time is not extended, so a
        second run of a playbook does not push the expiry further out. Use I(extend_ttl) to
        restart the clock on purpose.
    type: str
  extend_ttl:
    description: >-
      With I(ttl), restart the expiry even when the mode is already on as wanted (always reports a
      change).
    type: bool
    default: false
extends_documentation_fragment:
  - ffmpeg_api.ops.service
attributes:
  check_mode:
    support: full
    description: Reads the current status and reports what would change; changes nothing.
  diff_mode:
    support: full
    description: Shows the mode, reason and expiry before and after.
  idempotent:
    support: full
    description: >-
      Already on with the same reason (and an expiry when I(ttl) is set), or already off, reports no
      change.
author:
  - FFmpeg API Ops team (@ffmpeg-api-ops)
"""

EXAMPLES = r"""
- name: Put the API in maintenance for at most an hour
  ffmpeg_api.ops.maintenance_mode:
    state: "on"
    reason: vertical resize
    ttl: 1h

- name: Lift maintenance mode
  ffmpeg_api.ops.maintenance_mode:
    state: "off"
"""

RETURN = r"""
maintenance:
  description: Maintenance status after the task (what it would be, in check mode).
  returned: always
  type: dict
  contains:
    enabled:
      description: Whether maintenance mode is on.
      type: bool
    reason:
      description: Why it is on (null when off).
      type: str
    since:
      description: When it was switched on (UNIX time; null when off).
      type: float
    ttl:
      description: Seconds until it lifts by itself (null when off or without expiry).
      type: int
  sample: {enabled: true, reason: vertical resize, since: 1795000000.0, ttl: 3599}
"""

import re

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.ffmpeg_api.ops.plugins.module_utils.service_cli import (
    ServiceCLI,
    service_cli_argument_spec,
)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_seconds(text):
    """Seconds in a duration such as 90, 30m, 2h or 7d (the CLI's syntax); None when invalid."""
    match = _DURATION.match(str(text))
    if not match:
        return None
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def plan(current, state, reason=None, ttl=None, extend_ttl=False):
    """Whether the status `current` must change to match the wanted state, and the would-be
    status after the change: (changed, wanted)."""
    if state == "off":
        wanted = dict(enabled=False, reason=None, since=None, ttl=None)
        return bool(current.get("enabled")), wanted
    wanted_reason = reason if reason is not None else (current.get("reason") or "")
    if current.get("enabled"):
        same_reason = (current.get("reason") or "") == wanted_reason
        ttl_ok = ttl is None or (current.get("ttl") is not None and not extend_ttl)
        if same_reason and ttl_ok:
            return False, dict(current)
    wanted = dict(current)
    wanted.update(enabled=True, reason=wanted_reason, ttl=ttl)
    return True, wanted


def _view(status):
    return dict(
        enabled=bool(status.get("enabled")),
        reason=status.get("reason"),
        ttl=status.get("ttl"),
    )


def main():
    argument_spec = service_cli_argument_spec()
    argument_spec.update(
        state=dict(type="str", required=True, choices=["on", "off"]),
        reason=dict(type="str"),
        ttl=dict(type="str"),
        extend_ttl=dict(type="bool", default=False),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    p = module.params
    ttl = None
    if p["ttl"] is not None:
        ttl = duration_seconds(p["ttl"])
        if not ttl:
            module.fail_json(
                msg="ttl must be a positive duration like 90, 30m or 2h, not %r" % p["ttl"]
            )

    cli = ServiceCLI(module)
    current = cli.run("maintenance", "status")
    changed, wanted = plan(current, p["state"], p["reason"], ttl, p["extend_ttl"])
    result = dict(changed=changed, maintenance=wanted)
    if changed:
        result["diff"] = dict(before=_view(current), after=_view(wanted))
    if not changed or module.check_mode:
        module.exit_json(**result)

    if p["state"] == "on":
        after = cli.run(
            "maintenance", "on", "--reason", wanted["reason"], "--ttl" if ttl else None, ttl
        )
    else:
        after = cli.run("maintenance", "off")
    status = dict((k, after.get(k)) for k in ("enabled", "reason", "since", "ttl"))
    result["maintenance"] = status
    result["diff"]["after"] = _view(status)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
