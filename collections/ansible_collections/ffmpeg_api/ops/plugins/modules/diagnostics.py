#!/usr/bin/python
# Copyright: FFmpeg API Ops team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: diagnostics
short_description: Collect a diagnostics bundle (tar.gz) of the service's host
description:
  - Writes one C(tar.gz) with what an incident responder asks for first (the SEV1 runbook's
    "collect logs"); service states (C(supervisorctl status), C(systemctl) when present), the
    deployed releases (C(current), C(previous) and the release directories), memory, disk usage,
    the logs modified since a time (the service's, supervisor's, PostgreSQL's, Redis's,
    HAProxy's), and the kernel's out-of-memory kills (C(dmesg) or C(kern.log), when readable).
  - Secrets are scrubbed from every file put in the bundle, passwords in URLs
    (as in C(postgresql://user:***@host)) and C(PASSWORD=), C(SECRET=), C(TOKEN=) style assignments.
  - A bundle of the same O(name) that already exists is left as it is (no change).
version_added: "1.0.0"
author:
  - FFmpeg API Ops team (@ffmpeg-api-ops)
options:
  dest:
    description: Directory the bundle is written to (created when missing, mode 0700).
    type: path
    default: /var/tmp/ffmpeg-api-diagnostics
  name:
    description:
      - File name of the bundle, without C(.tar.gz). Default is C(diagnostics-YYYYmmdd_HHMMSS).
    type: str
  since:
    description:
      - Include log files modified since then, as a duration back from now (C(30m), C(2h),
        C(1 hour ago)) or an ISO 8601 time (C(2026-11-29T03:00:00Z)).
    type: str
    default: 2h
  log_paths:
    description: Log files or directories to look in.
    type: list
    elements: path
    default:
      - /var/log/ffmpeg-api
      - /var/log/supervisor
      - /var/log/postgresql
      - /var/log/redis
      - /var/log/haproxy.log
  max_log_bytes:
    description: Keep at most the last this many bytes of each log file.
    type: int
    default: 5242880
  releases_dir:
    description: The service's deployment root (C(releases/), C(current), C(previous)).
    type: path
    default: /opt/ffmpeg-api
attributes:
  check_mode:
    support: full
    description: Collects everything and reports the bundle's path; writes nothing.
  diff_mode:
    support: none
    description: No diff; the bundle is a new file.
  idempotent:
    support: full
    description: A bundle is written once per O(name); give a new name (or none) to collect again.
"""

EXAMPLES = r"""
- name: Collect the last two hours
  ffmpeg_api.ops.diagnostics:
    since: 2h
  register: bundle

- name: Fetch the bundle to the controller
  ansible.builtin.fetch:
    src: "{{ bundle.path }}"
    dest: incidents/
"""

RETURN = r"""
path:
  description: The bundle's path on the managed host.
  returned: always
  type: str
  sample: /var/tmp/ffmpeg-api-diagnostics/diagnostics-20261129_031900.tar.gz
summary:
  description: A short summary of what was found.
  returned: always
  type: dict
  contains:
    services: {description: Programs supervisor reports and their state., type: dict}
    not_running: {description: Programs not RUNNING., type: list}
    current_release: {description: The release C(current) points to., type: str}
    previous_release: {description: The release C(previous) points to., type: str}
    mem_available_percent: {description: MemAvailable / MemTotal in percent., type: float}
    oom_kills: {description: Kernel OOM-kill lines found., type: list}
    logs: {description: Log files included (paths on the host)., type: list}
members:
  description: Names of the files in the bundle.
  returned: always
  type: list
  elements: str
"""

import datetime
import io
import os
import re
import tarfile
import time

from ansible.module_utils.basic import AnsibleModule

URL_PASSWORD = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^@\s]+@")
ASSIGNED_SECRET = re.compile(
    r"(?i)\b([A-Z0-9_]*(?:PASSWORD|PASSWD|SECRET|TOKEN|API_KEY)[A-Z0-9_]*\s*[=:]\s*)(\S+)"
)
OOM = re.compile(r"(?i)(out of memory|oom-kill|killed process)")
DURATION = re.compile(
    r"^\s*(\d+)\s*(s|sec|secs|seconds?|m|min|mins|minutes?|h|hours?|d|days?)?\s*(ago)?\s*$"
)
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def scrub(text):
    text = URL_PASSWORD.sub(r"\1***@", text)
    return ASSIGNED_SECRET.sub(r"\1***", text)


def since_timestamp(text, now):
    """Epoch seconds of `since`: a duration back from now (2h, 90m, "1 hour ago") or an ISO time."""
    match = DURATION.match(str(text))
    if match:
        unit = (match.group(2) or "s")[0]
        return now - int(match.group(1)) * UNITS[unit]
    try:
        when = datetime.datetime.fromisoformat(str(text).strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            "since %r is neither a duration like 2h or '1 hour ago' nor an ISO time" % text
        )
    if when.tzinfo is None:
        return time.mktime(when.timetuple())
    return when.timestamp()


def parse_supervisor_status(text):
    """{program: state} from `supervisorctl status` output."""
    states = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1].isupper():
            states[parts[0]] = parts[1]
    return states


def mem_available_percent(meminfo):
    values = {}
    for line in meminfo.splitlines():
        key, _, rest = line.partition(":")
        if rest.strip():
            values[key] = int(rest.split()[0])
    if values.get("MemTotal"):
        return round(100.0 * values.get("MemAvailable", 0) / values["MemTotal"], 1)
    return None


def tail_bytes(path, limit):
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        if size > limit:
            fh.seek(size - limit)
        return fh.read().decode("utf-8", "replace")


def recent_logs(paths, since_ts):
    found = []
    for path in paths:
        if os.path.isfile(path):
            candidates = [path]
        elif os.path.isdir(path):
            candidates = [os.path.join(d, n) for d, _, names in os.walk(path) for n in names]
        else:
            continue
        for c in sorted(candidates):
            try:
                if os.path.isfile(c) and not os.path.islink(c) and os.path.getmtime(c) >= since_ts:
                    found.append(c)
            except OSError:
                continue
    return found


class Collector(object):
    def __init__(self, module):
        self.module = module
        self.files = {}

    def add(self, name, text):
        self.files[name] = scrub(text)

    def command(self, name, argv, ok_codes=(0,)):
        binary = self.module.get_bin_path(argv[0])
        if not binary:
            return None
        rc, out, err = self.module.run_command([binary] + argv[1:])
        self.add(name, "$ %s  (exit %d)\n%s%s" % (" ".join(argv), rc, out, err))
        return out if rc in ok_codes else None


def collect(module, p, since_ts):
    c = Collector(module)
    summary = {}
    # supervisorctl exits 3 when a program is not running: exactly the output wanted here.
    status = c.command(
        "services/supervisorctl-status.txt", ["supervisorctl", "status"], ok_codes=(0, 3)
    )
    summary["services"] = parse_supervisor_status(status or "")
    summary["not_running"] = sorted(k for k, v in summary["services"].items() if v != "RUNNING")
    if os.path.isdir("/run/systemd/system"):
        c.command("services/systemctl.txt", ["systemctl", "list-units", "--no-pager", "--all"])
    c.command("services/ps.txt", ["ps", "aux", "--sort=-%mem"])

    releases = []
    for link in ("current", "previous"):
        target = os.path.join(p["releases_dir"], link)
        value = None
        if os.path.islink(target):
            value = os.path.basename(os.path.realpath(target))
        elif os.path.isfile(target):
            # The app role writes the previous release's path into a file.
            with open(target) as fh:
                value = os.path.basename(fh.read().strip().rstrip("/")) or None
        summary["%s_release" % link] = value
        releases.append("%s -> %s" % (link, value))
    rel_dir = os.path.join(p["releases_dir"], "releases")
    if os.path.isdir(rel_dir):
        entries = sorted(
            os.listdir(rel_dir), key=lambda n: os.path.getmtime(os.path.join(rel_dir, n))
        )
        for n in entries:
            mtime = datetime.datetime.utcfromtimestamp(os.path.getmtime(os.path.join(rel_dir, n)))
            releases.append("%s  %s" % (mtime.strftime("%Y-%m-%dT%H:%M:%SZ"), n))
    c.add("releases.txt", "\n".join(releases) + "\n")

    try:
        with open("/proc/meminfo") as fh:
            meminfo = fh.read()
        c.add("memory/meminfo.txt", meminfo)
        summary["mem_available_percent"] = mem_available_percent(meminfo)
    except OSError:
        summary["mem_available_percent"] = None
    c.command("disk/df.txt", ["df", "-h"])
    c.command("disk/df-inodes.txt", ["df", "-i"])

    oom = []
    dmesg = c.command("kernel/dmesg.txt", ["dmesg", "-T"])
    if dmesg:
        oom += [line for line in dmesg.splitlines() if OOM.search(line)]
    if os.access("/var/log/kern.log", os.R_OK):
        oom += [
            line
            for line in tail_bytes("/var/log/kern.log", p["max_log_bytes"]).splitlines()
            if OOM.search(line)
        ]
    c.add("kernel/oom-kills.txt", "\n".join(oom) + "\n")
    summary["oom_kills"] = oom[-20:]

    logs = recent_logs(p["log_paths"], since_ts)
    for path in logs:
        try:
            c.add("logs" + path, tail_bytes(path, p["max_log_bytes"]))
        except OSError:
            continue
    summary["logs"] = logs
    return c.files, summary


def write_bundle(path, files):
    tmp = path + ".part"
    now = time.time()
    with tarfile.open(tmp, "w:gz") as tar:
        for name in sorted(files):
            data = files[name].encode("utf-8")
            info = tarfile.TarInfo(
                os.path.basename(path)[: -len(".tar.gz")] + "/" + name.lstrip("/")
            )
            info.size = len(data)
            info.mtime = now
            info.mode = 0o600
            tar.addfile(info, io.BytesIO(data))
    os.chmod(tmp, 0o600)
    os.rename(tmp, path)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            dest=dict(type="path", default="/var/tmp/ffmpeg-api-diagnostics"),
            name=dict(type="str"),
            since=dict(type="str", default="2h"),
            log_paths=dict(
                type="list",
                elements="path",
                default=[
                    "/var/log/ffmpeg-api",
                    "/var/log/supervisor",
                    "/var/log/postgresql",
                    "/var/log/redis",
                    "/var/log/haproxy.log",
                ],
            ),
            max_log_bytes=dict(type="int", default=5 * 1024 * 1024),
            releases_dir=dict(type="path", default="/opt/ffmpeg-api"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        since_ts = since_timestamp(p["since"], time.time())
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    name = p["name"] or datetime.datetime.now().strftime("diagnostics-%Y%m%d_%H%M%S")
    if "/" in name:
        module.fail_json(msg="name must be a file name, not a path: %s" % name)
    path = os.path.join(p["dest"], name + ".tar.gz")
    if os.path.exists(path):
        with tarfile.open(path) as tar:
            members = [m.name.split("/", 1)[-1] for m in tar.getmembers()]
        module.exit_json(
            changed=False, path=path, members=members, summary={}, msg="bundle already exists"
        )

    files, summary = collect(module, p, since_ts)
    if not module.check_mode:
        if not os.path.isdir(p["dest"]):
            os.makedirs(p["dest"], 0o700)
        write_bundle(path, files)
    module.exit_json(changed=True, path=path, members=sorted(files), summary=summary)


if __name__ == "__main__":
    main()
