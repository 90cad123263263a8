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
  - Wraps C(ffmpeg-api maintenance on|off), which decides whether anything changes; the module
    passes its C(changed), C(diff) and status on.
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
      - Lift maintenance mode by itself after this long (C(90), C(30m), C(1.5h), C(2h); at least
        one second), so a forgotten switch cannot keep the service down. The CLI parses it.
      - Only used with I(state=on), and only when this module switches the mode on, changes its
        reason, or finds it on without any expiry. A mode already on with the same reason and
        an expiry is left alone (C(changed=false)); its remaining time is not extended, so a
        second run of a playbook does not push the expiry further out. Use I(extend_ttl) to
        restart the clock on purpose.
    type: str
  extend_ttl:
    description: >-
      With I(ttl), restart the expiry even when the mode is already on as wanted (always reports a
      change). Passed to the CLI as C(--extend-ttl), or C(--keep-ttl).
    type: bool
    default: false
extends_documentation_fragment:
  - ffmpeg_api.ops.service
attributes:
  check_mode:
    support: full
    description: >-
      Runs the CLI with C(--dry-run), which reports what it would change and changes nothing.
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

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.ffmpeg_api.ops.plugins.module_utils.service_cli import (
    ServiceCLI,
    service_cli_argument_spec,
)

STATUS_FIELDS = ("enabled", "reason", "since", "ttl")


def cli_args(state, reason=None, ttl=None, extend_ttl=False):
    """The CLI call for the wanted state; the CLI decides whether it changes anything."""
    if state == "off":
        return ("maintenance", "off")
    return (
        "maintenance",
        "on",
        "--reason" if reason is not None else None,
        reason,
        "--ttl" if ttl is not None else None,
        ttl,
        "--extend-ttl" if extend_ttl else "--keep-ttl",
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
    # The CLI parses the TTL (a bad one fails the task with the CLI's message), decides whether
    # anything changes, and with --dry-run (check mode) reports what it would do.
    out = ServiceCLI(module).run(
        *cli_args(p["state"], p["reason"], p["ttl"], p["extend_ttl"]), dry_run=module.check_mode
    )
    module.exit_json(
        changed=bool(out["changed"]),
        maintenance=dict((k, out.get(k)) for k in STATUS_FIELDS),
        diff=out["diff"],
    )


if __name__ == "__main__":
    main()
