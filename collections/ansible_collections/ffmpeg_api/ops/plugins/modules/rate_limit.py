#!/usr/bin/python
# Copyright: FFmpeg API Ops team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: rate_limit
short_description: Set the FFmpeg API's service-wide rate limit and DDoS-protection mode
version_added: 1.0.0
description:
  - The global limit (requests per minute over all clients) and DDoS-protection mode (a
    per-client-IP limit on every request) live in Redis, so one call changes every API host.
  - Wraps C(ffmpeg-api ratelimit set [PER_MINUTE] [--ddos on|off]), which decides whether
    anything changes; the module passes its C(changed), C(diff) and limits on.
options:
  per_minute:
    description: Service-wide limit in requests per minute; C(0) means unlimited.
    type: int
  ddos:
    description: Whether DDoS-protection mode should be on.
    type: bool
extends_documentation_fragment:
  - ffmpeg_api.ops.service
attributes:
  check_mode:
    support: full
    description: >-
      Runs the CLI with C(--dry-run), which reports what it would change and changes nothing.
  diff_mode:
    support: full
    description: Shows the limits before and after.
  idempotent:
    support: full
    description: Limits already as wanted report no change.
notes:
  - Per-key limits are properties of each key (C(ffmpeg-api keys create --rate-limit)), not of this
    module.
author:
  - FFmpeg API Ops team (@ffmpeg-api-ops)
"""

EXAMPLES = r"""
- name: Tighten the global limit and switch DDoS protection on
  ffmpeg_api.ops.rate_limit:
    per_minute: 100
    ddos: true

- name: Back to normal
  ffmpeg_api.ops.rate_limit:
    per_minute: 0
    ddos: false
"""

RETURN = r"""
limits:
  description: The limits after the task (what they would be, in check mode).
  returned: always
  type: dict
  contains:
    global_per_minute:
      description: Service-wide requests per minute (0 = unlimited).
      type: int
    per_key_default_per_minute:
      description: Default per-key limit (C(RATE_LIMIT_PER_MINUTE)).
      type: int
    ddos_protection:
      description: Whether DDoS-protection mode is on.
      type: bool
    ddos_ip_per_minute:
      description: Per-client-IP limit applied in DDoS-protection mode.
      type: int
  sample:
    {global_per_minute: 100, per_key_default_per_minute: 600, ddos_protection: true,
     ddos_ip_per_minute: 60}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.ffmpeg_api.ops.plugins.module_utils.service_cli import (
    ServiceCLI,
    service_cli_argument_spec,
)

FIELDS = (
    "global_per_minute",
    "per_key_default_per_minute",
    "ddos_protection",
    "ddos_ip_per_minute",
)


def cli_args(per_minute=None, ddos=None):
    """One CLI call for both settings; the CLI decides whether anything changes."""
    return (
        "ratelimit",
        "set",
        per_minute,
        "--ddos" if ddos is not None else None,
        None if ddos is None else ("on" if ddos else "off"),
    )


def main():
    argument_spec = service_cli_argument_spec()
    argument_spec.update(
        per_minute=dict(type="int"),
        ddos=dict(type="bool"),
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        required_one_of=[("per_minute", "ddos")],
        supports_check_mode=True,
    )
    p = module.params
    # The CLI refuses a negative limit (exit 2, its message fails the task), decides whether
    # anything changes and, with --dry-run in check mode, reports what it would set.
    out = ServiceCLI(module).run(*cli_args(p["per_minute"], p["ddos"]), dry_run=module.check_mode)
    module.exit_json(
        changed=bool(out["changed"]),
        limits=dict((k, out.get(k)) for k in FIELDS),
        diff=out["diff"],
    )


if __name__ == "__main__":
    main()
