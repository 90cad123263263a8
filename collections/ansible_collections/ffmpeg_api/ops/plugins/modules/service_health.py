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
    covering
    database, Redis, queue depths, workers alive and busy, storage, ffmpeg and maintenance mode.
    The deep check adds database connections by state (C(pg_stat_activity)) and, per worker,
    the jobs it is processing, including jobs held by workers that are gone.
  - Optionally measures the API's response time over HTTP (I(url), e.g. through the load
    balancer), as a client sees it.
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
  require_workers:
    description: >-
      Count "no worker alive" as unhealthy (a transcoding service without workers processes
      nothing).
    type: bool
    default: true
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
    description: Read-only; runs the same in check mode.
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
    Whether the check passed (no critical component in error, workers alive when required, HTTP
    fine).
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
  description: The HTTP measurement of I(url).
  returned: when url is set
  type: dict
  contains:
    status:
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
      description: Why the request failed, when it did.
      type: str
"""

import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.six.moves.urllib.error import HTTPError
from ansible.module_utils.urls import open_url
from ansible_collections.ffmpeg_api.ops.plugins.module_utils.service_cli import (
    ServiceCLI,
    service_cli_argument_spec,
)

CRITICAL = ("database", "redis", "storage", "ffmpeg")


def http_problems(http, max_response_ms):
    problems = []
    if http.get("error"):
        problems.append("HTTP %s" % http["error"])
    elif http.get("status") != 200:
        problems.append("HTTP status %s" % http.get("status"))
    if http.get("avg_ms") is not None and http["avg_ms"] > max_response_ms:
        problems.append(
            "slow responses: %.0f ms average (limit %.0f ms)" % (http["avg_ms"], max_response_ms)
        )
    return problems


def workers_alive(report):
    workers = report.get("components", {}).get("workers", {})
    return workers.get("cpu", {}).get("alive", 0) + workers.get("gpu", {}).get("alive", 0)


def verdict(report, http=None, max_response_ms=2000, require_workers=True, ignore=()):
    """(healthy, status, problems, summary) of a CLI health report and an optional HTTP
    measurement, leaving out the components in `ignore`.

    Unhealthy: a critical component (database, Redis, storage, ffmpeg) in error, no worker
    alive (when required), or the HTTP check failing or too slow. Anything else not ok
    (maintenance on, a queue backlog...) makes the service degraded, not unhealthy.
    """
    ignore = set(ignore or ())
    components = report.get("components", {})
    problems = [
        p["message"] if isinstance(p, dict) else str(p)
        for p in report.get("problems", [])
        if not (isinstance(p, dict) and p.get("component") in ignore)
    ]
    healthy = not any(
        components.get(c, {}).get("status") == "error" for c in CRITICAL if c not in ignore
    )
    if require_workers and "workers" not in ignore and workers_alive(report) == 0:
        healthy = False
    if http is not None and "http" not in ignore:
        found = http_problems(http, max_response_ms)
        problems.extend(found)
        healthy = healthy and not found
    if not healthy:
        status = "unhealthy"
    elif problems:
        status = "degraded"
    else:
        status = "healthy"
    summary = status if not problems else "%s: %s" % (status, "; ".join(problems))
    return healthy, status, problems, summary


def measure(url, samples, timeout):
    times, status, error = [], None, None
    for _ in range(max(1, samples)):
        started = time.time()
        try:
            resp = open_url(url, method="GET", timeout=timeout, validate_certs=True)
            resp.read()
            status = resp.getcode()
        except HTTPError as exc:
            status = exc.code
        except Exception as exc:  # connection refused, timeout: reported, not raised
            error = "%s (%s)" % (exc.__class__.__name__, exc)
            break
        times.append(round((time.time() - started) * 1000, 2))
    return dict(
        url=url,
        status=status,
        response_ms=times,
        avg_ms=round(sum(times) / len(times), 2) if times else None,
        max_ms=max(times) if times else None,
        error=error,
    )


def main():
    argument_spec = service_cli_argument_spec()
    argument_spec.update(
        deep=dict(type="bool", default=False),
        ignore=dict(type="list", elements="str", default=[]),
        url=dict(type="str"),
        samples=dict(type="int", default=3),
        timeout=dict(type="float", default=10),
        max_response_ms=dict(type="float", default=2000),
        require_workers=dict(type="bool", default=True),
        fail_when_unhealthy=dict(type="bool", default=True),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    p = module.params
    report = ServiceCLI(module).run("health", "--deep" if p["deep"] else None)
    http = measure(p["url"], p["samples"], p["timeout"]) if p["url"] else None
    healthy, status, problems, summary = verdict(
        report, http, p["max_response_ms"], p["require_workers"], p["ignore"]
    )
    result = dict(
        changed=False,
        healthy=healthy,
        status=status,
        summary=summary,
        problems=problems,
        components=report.get("components", {}),
    )
    if http is not None:
        result["http"] = http
    if not healthy and p["fail_when_unhealthy"]:
        module.fail_json(msg=summary, **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
