#!/usr/bin/python
# Copyright: FFmpeg API Ops team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: haproxy_top_clients
short_description: The busiest client addresses in HAProxy's access log over a time window
description:
  - Reads HAProxy's HTTP access log (C(option httplog) lines, as rsyslog writes them) and counts
    the requests of each client address accepted within the last O(window), with the share of
    4xx answers and of 429 (rate limited) and 403 (denied) answers.
  - The DDoS runbook's C(awk '{print $1}' | sort | uniq -c | sort -rn | head -20), restricted to
    a time window, and able to pick the addresses over a threshold for
    M(ffmpeg_api.ops.nft_blocklist).
  - Read-only.
version_added: "1.0.0"
author:
  - FFmpeg API Ops team (@ffmpeg-api-ops)
options:
  paths:
    description: Access log files to read (missing ones are skipped, and reported).
    type: list
    elements: path
    default: [/var/log/haproxy.log]
  window:
    description: How far back to count, as C(90s), C(10m), C(1h) or C(2d).
    type: str
    default: 1h
  top:
    description: How many clients to return, busiest first.
    type: int
    default: 20
  threshold:
    description:
      - Clients with at least this many requests in the window are listed in RV(over_threshold).
      - V(0) lists none.
    type: int
    default: 0
  exclude:
    description: Addresses or networks never listed in RV(over_threshold) (monitoring, offices).
    type: list
    elements: str
    default: []
attributes:
  check_mode:
    support: full
    description: The module only reads; check mode runs it in full.
  diff_mode:
    support: none
    description: Nothing changes, so there is no diff.
  idempotent:
    support: full
    description: The module only reads.
"""

EXAMPLES = r"""
- name: Count the requests of each client over the last 10 minutes
  ffmpeg_api.ops.haproxy_top_clients:
    window: 10m
    threshold: 1000
    exclude: [127.0.0.1]
  register: top_clients

- name: Block the clients over the threshold
  ffmpeg_api.ops.nft_blocklist:
    addresses: "{{ top_clients.over_threshold | map(attribute='address') | list }}"
"""

RETURN = r"""
clients:
  description: The O(top) busiest clients in the window.
  returned: always
  type: list
  elements: dict
  sample:
    - {address: 203.0.113.7, requests: 5400, status_4xx: 5100, status_429: 5000, status_403: 0,
       share_4xx: 0.944}
over_threshold:
  description: Clients with at least O(threshold) requests, outside O(exclude), busiest first.
  returned: always
  type: list
  elements: dict
total_requests:
  description: Requests in the window, all clients.
  returned: always
  type: int
lines_skipped:
  description: Lines that were not HAProxy HTTP log lines.
  returned: always
  type: int
since:
  description: Start of the window (local time of the managed host, ISO 8601).
  returned: always
  type: str
missing_paths:
  description: Entries of O(paths) that did not exist.
  returned: always
  type: list
  elements: str
"""

import datetime
import ipaddress
import os
import re

from ansible.module_utils.basic import AnsibleModule

# "<client>:<port> [29/Nov/2026:03:19:00.123] <frontend> <backend/server> <timers> <status> ..."
# (after rsyslog's "<time> <host> haproxy[<pid>]: " prefix, or with none when logged to stdout)
LINE = re.compile(
    r"(?:^|\s)(?P<client>[0-9A-Fa-f.:]+):\d+ \[(?P<accepted>\d\d/\w{3}/\d{4}:[\d:.]+)\] "
    r"\S+ \S+ \S+ (?P<status>-?\d+) "
)
DURATION = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_window(text):
    match = DURATION.match(str(text))
    if not match:
        raise ValueError("window %r is not a duration like 90s, 10m, 1h or 2d" % text)
    return int(match.group(1)) * UNITS[match.group(2)]


def parse_accept_date(text):
    """HAProxy's accept date (local time of the proxy host) as a naive datetime."""
    return datetime.datetime.strptime(text.split(".")[0], "%d/%b/%Y:%H:%M:%S")


def count_clients(lines, since):
    """({address: {requests, status_4xx, status_429, status_403}}, skipped) for lines >= since."""
    counts = {}
    skipped = 0
    for line in lines:
        match = LINE.search(line)
        if not match:
            skipped += 1
            continue
        try:
            accepted = parse_accept_date(match.group("accepted"))
        except ValueError:
            skipped += 1
            continue
        if accepted < since:
            continue
        entry = counts.setdefault(
            match.group("client"),
            {"requests": 0, "status_4xx": 0, "status_429": 0, "status_403": 0},
        )
        status = int(match.group("status"))
        entry["requests"] += 1
        if 400 <= status < 500:
            entry["status_4xx"] += 1
        if status == 429:
            entry["status_429"] += 1
        elif status == 403:
            entry["status_403"] += 1
    return counts, skipped


def rank(counts, top, threshold, exclude):
    ranked = []
    for address, c in counts.items():
        item = dict(address=address, **c)
        item["share_4xx"] = (
            round(float(c["status_4xx"]) / c["requests"], 3) if c["requests"] else 0.0
        )
        ranked.append(item)
    ranked.sort(key=lambda c: (-c["requests"], c["address"]))
    over = []
    if threshold > 0:
        for c in ranked:
            if c["requests"] < threshold:
                break
            if not _excluded(c["address"], exclude):
                over.append(c)
    return ranked[:top], over


def _excluded(address, networks):
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip.version == n.version and ip in n for n in networks)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            paths=dict(type="list", elements="path", default=["/var/log/haproxy.log"]),
            window=dict(type="str", default="1h"),
            top=dict(type="int", default=20),
            threshold=dict(type="int", default=0),
            exclude=dict(type="list", elements="str", default=[]),
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        since = datetime.datetime.now() - datetime.timedelta(seconds=parse_window(p["window"]))
        exclude = [ipaddress.ip_network(n, strict=False) for n in p["exclude"]]
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    counts, skipped, missing = {}, 0, []
    for path in p["paths"]:
        if not os.path.exists(path):
            missing.append(path)
            continue
        with open(path, errors="replace") as fh:
            found, bad = count_clients(fh, since)
        skipped += bad
        for address, c in found.items():
            total = counts.setdefault(address, dict.fromkeys(c, 0))
            for key, value in c.items():
                total[key] += value
    clients, over = rank(counts, p["top"], p["threshold"], exclude)
    module.exit_json(
        changed=False,
        clients=clients,
        over_threshold=over,
        total_requests=sum(c["requests"] for c in counts.values()),
        lines_skipped=skipped,
        missing_paths=missing,
        since=since.isoformat(),
    )


if __name__ == "__main__":
    main()
