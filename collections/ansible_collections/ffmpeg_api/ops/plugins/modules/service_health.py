#!/usr/bin/python
# Copyright: FFmpeg API Ops team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: service_health
short_description: Quick or deep health check of the FFmpeg API, failing with a readable summary
version_added: 1.0.0
description:
  - Runs the service's own health check on the managed host (C(ffmpeg-api health [--deep])),
    and passes its verdict on (C(status), C(healthy), C(problems), C(summary)); the module
    judges nothing itself. It covers
    database, Redis, queue depths, workers alive and busy, storage, ffmpeg and maintenance mode.
    The deep check adds database connections by state (C(pg_stat_activity)) and, per worker,
    the jobs it is processing, including jobs held by workers that are gone.
  - Optionally has the CLI measure the API's response time over HTTP (I(url), e.g. through the
    load balancer), as a client sees it (component C(http), critical like the database).
  - A service without any worker alive is C(degraded), as the service's own C(/health) says
    (jobs queue up and run when workers return), not C(unhealthy).
  - "Fails the task when the service is unhealthy (I(fail_when_unhealthy)), with one short
    paragraph naming what is wrong, e.g. C(unhealthy: database error (connection refused);
    workers: 0 alive)."
options:
  deep:
    description:
      - Also database connections by state and, per worker, the jobs it is processing (the
        runbook's deep health check). Without it, the quick check.
    type: bool
    default: false
  ignore:
    description:
      - Components whose problems neither count nor appear in the summary, e.g. C(maintenance)
        while a remediation holds the service in maintenance mode on purpose, or C(workers)
        to allow a deployment without workers.
      - "Component names: database, redis, queues, workers, storage, ffmpeg, maintenance, and
        with I(deep) connections and worker_jobs; C(http) for the I(url) measurement."
    type: list
    elements: str
    default: []
  url:
    description:
      - A health URL to time over HTTP, e.g. C(http://127.0.0.1:8080/api/v1/health). It must
        answer C(200).
      - Unset, no HTTP request is made.
    type: str
  samples:
    description: Requests made to I(url); the average and the slowest are reported.
    type: int
    default: 3
  timeout:
    description: Seconds to wait for each HTTP answer.
    type: float
    default: 10
  max_response_ms:
    description: An average response time of I(url) above this many milliseconds is a problem.
    type: float
    default: 2000
  fail_when_unhealthy:
    description: >-
      Fail the task when unhealthy. With C(false) the result is only reported (I(healthy),
      I(summary)).
    type: bool
    default: true
extends_documentation_fragment:
  - ffmpeg_api.ops.service
attributes:
  check_mode:
    support: full
    description: Read-only; runs the same in check mode (the CLI's health command changes nothing).
  diff_mode:
    support: none
    description: Nothing changes, so there is nothing to show.
  idempotent:
    support: full
    description: Never changes anything.
author:
  - FFmpeg API Ops team (@ffmpeg-api-ops)
"""

EXAMPLES = r"""
- name: Quick health check through the load balancer
  ffmpeg_api.ops.service_health:
    url: http://127.0.0.1:8080/api/v1/health

- name: Deep check, reported without failing
  ffmpeg_api.ops.service_health:
    deep: true
    fail_when_unhealthy: false
  register: health

- name: Show it
  ansible.builtin.debug:
    msg: "{{ health.summary }}"
"""

RETURN = r"""
healthy:
  description: >-
    The CLI's C(healthy): false only when C(status) is C(unhealthy) (a critical component, or
    the HTTP measurement, in error).
  returned: always
  type: bool
status:
  description: >-
    C(healthy), C(degraded) (something not ok that does not stop the service, e.g. maintenance
    mode) or C(unhealthy), after I(ignore).
  returned: always
  type: str
summary:
  description: >-
    One line: C(healthy), or the status, a colon and the problems separated by semicolons.
  returned: always
  type: str
  sample: "unhealthy: database error (OperationalError: connection refused); workers: 0 alive"
problems:
  description: One phrase per problem found.
  returned: always
  type: list
  elements: str
components:
  description: >-
    Each component's report (C(status), C(ms) and its figures, e.g. C(queues.depths),
    C(workers.cpu.alive), C(connections.by_state)).
  returned: always
  type: dict
http:
  description: The HTTP measurement of I(url) (the CLI's component C(http)).
  returned: when url is set
  type: dict
  contains:
    status:
      description: C(ok), or C(error) when it failed, did not answer 200 or was too slow.
      type: str
    http_status:
      description: HTTP status of the last answer (null when none came).
      type: int
    response_ms:
      description: Each request's time in milliseconds.
      type: list
      elements: float
    avg_ms:
      description: Average response time.
      type: float
    max_ms:
      description: Slowest response.
      type: float
    error:
      description: Why the measurement is in error, when it is.
      type: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.ffmpeg_api.ops.plugins.module_utils.service_cli import (
    ServiceCLI,
    service_cli_argument_spec,
)


def cli_args(deep=False, ignore=(), url=None, samples=3, timeout=10, max_response_ms=2000):
    """The CLI call; the CLI measures, judges and summarises."""
    args = ["health", "--deep" if deep else None]
    for name in ignore or ():
        args += ["--ignore", name]
    if url:
        args += ["--url", url, "--samples", samples, "--timeout", timeout]
        args += ["--max-response-ms", max_response_ms]
    return args


def main():
    argument_spec = service_cli_argument_spec()
    argument_spec.update(
        deep=dict(type="bool", default=False),
        ignore=dict(type="list", elements="str", default=[]),
        url=dict(type="str"),
        samples=dict(type="int", default=3),
        timeout=dict(type="float", default=10),
        max_response_ms=dict(type="float", default=2000),
        fail_when_unhealthy=dict(type="bool", default=True),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    p = module.params
    report = ServiceCLI(module).run(
        *cli_args(
            p["deep"], p["ignore"], p["url"], p["samples"], p["timeout"], p["max_response_ms"]
        )
    )
    components = report.get("components", {})
    result = dict(
        changed=False,
        healthy=report["healthy"],
        status=report["status"],
        summary=report["summary"],
        problems=[problem["message"] for problem in report.get("problems", [])],
        components=components,
    )
    if "http" in components:
        result["http"] = components["http"]
    if not result["healthy"] and p["fail_when_unhealthy"]:
        module.fail_json(msg=result["summary"], **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
