#!/usr/bin/python
# Copyright: FFmpeg API Ops team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: stuck_jobs
short_description: Find and requeue FFmpeg API jobs whose worker stopped reporting
version_added: 1.0.0
description:
  - A processing job whose worker has not sent a heartbeat for longer than I(older_than) is
    stuck (its worker died, was killed, or its host was lost). Requeueing puts it back on its
    queue with its retry count raised; a job lost C(JOB_MAX_RETRIES) times fails with the
    reason instead. Each requeue is a compare-and-swap on the heartbeat, so a job that reported
    meanwhile, or that a worker's own reaper handled first, is left alone.
  - Optionally reconciles the queues with the database (PostgreSQL is the source of truth), so
    every C(queued) job Redis has lost is enqueued again.
  - Wraps C(ffmpeg-api jobs requeue-stuck --older-than) and C(ffmpeg-api jobs reconcile).
options:
  older_than:
    description: How long a processing job's worker must have been silent (C(90), C(30m), C(2h)).
    type: str
    default: 1h
  requeue:
    description: >-
      Requeue what is found. With C(false) the module only reports the stuck jobs (never a change).
    type: bool
    default: true
  reconcile:
    description: >-
      Also enqueue every C(queued) job that Redis does not hold (after a Redis flush or failover).
    type: bool
    default: false
extends_documentation_fragment:
  - ffmpeg_api.ops.service
attributes:
  check_mode:
    support: full
    description: >-
      Runs the CLI with C(--dry-run), which lists exactly the jobs a real run would requeue or fail.
  diff_mode:
    support: full
    description: Shows the stuck and unqueued job ids before and after.
  idempotent:
    support: full
    description: >-
      Requeued jobs are no longer stuck, so a second run finds nothing and reports no change.
author:
  - FFmpeg API Ops team (@ffmpeg-api-ops)
"""

EXAMPLES = r"""
- name: Requeue jobs silent for two hours, and enqueue what Redis lost
  ffmpeg_api.ops.stuck_jobs:
    older_than: 2h
    reconcile: true
  register: stuck

- name: Only list jobs silent for ten minutes
  ffmpeg_api.ops.stuck_jobs:
    older_than: 10m
    requeue: false
"""

RETURN = r"""
requeued:
  description: >-
    Ids of the stuck jobs put back on their queue (would be, in check mode or with
    I(requeue=false)).
  returned: always
  type: list
  elements: str
  sample: ["7d6f0c1e-3a0b-4f57-9f7e-2b1c6c1f9a10"]
failed:
  description: Ids of stuck jobs that had used up their retries and were marked failed.
  returned: always
  type: list
  elements: str
stuck:
  description: Every stuck job found (I(requeued) + I(failed)).
  returned: always
  type: list
  elements: str
reconciled:
  description: Ids of queued jobs enqueued again because Redis did not hold them.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.ffmpeg_api.ops.plugins.module_utils.service_cli import (
    ServiceCLI,
    service_cli_argument_spec,
)


def build_result(requeue_out, reconcile_out=None, report_only=False):
    """The module result from the CLI's documents, whose `changed` it passes on. With
    `report_only` (requeue=false) the requeue was a dry run, so finding stuck jobs is a report,
    not a change; an unqueued job reconciled still is one."""
    requeued = list(requeue_out.get("requeued", []))
    failed = list(requeue_out.get("failed", []))
    reconciled = list((reconcile_out or {}).get("requeued", []))
    stuck = requeued + failed
    before, after = {}, {}
    if stuck and not report_only:
        before["stuck_jobs"], after["stuck_jobs"] = sorted(stuck), []
    if reconciled:
        before["unqueued_jobs"], after["unqueued_jobs"] = sorted(reconciled), []
    result = dict(
        changed=bool(not report_only and requeue_out.get("changed"))
        or bool((reconcile_out or {}).get("changed")),
        requeued=requeued,
        failed=failed,
        stuck=stuck,
        reconciled=reconciled,
    )
    if before:
        result["diff"] = dict(before=before, after=after)
    return result


def main():
    argument_spec = service_cli_argument_spec()
    argument_spec.update(
        older_than=dict(type="str", default="1h"),
        requeue=dict(type="bool", default=True),
        reconcile=dict(type="bool", default=False),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    p = module.params
    cli = ServiceCLI(module)
    preview = module.check_mode or not p["requeue"]

    requeue_out = cli.run("jobs", "requeue-stuck", "--older-than", p["older_than"], dry_run=preview)
    reconcile_out = None
    if p["reconcile"]:
        reconcile_out = cli.run("jobs", "reconcile", dry_run=module.check_mode)
    result = build_result(requeue_out, reconcile_out, report_only=not p["requeue"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
