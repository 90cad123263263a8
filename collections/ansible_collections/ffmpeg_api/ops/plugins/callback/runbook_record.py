# Copyright: FFmpeg API Ops team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: runbook_record
type: aggregate
short_description: Keep a record of what each runbook run did
description:
  - Writes one JSON Lines file per playbook run. It holds a C(start) line (playbook, check
    mode, user, extra variable names), one line per task result (time, host, task, module,
    status, changed, a short message), and a C(stats) line with the recap.
  - Results of C(no_log) tasks are recorded without their message.
  - The file's path is exported to the run as the environment variable
    C(FFMPEG_API_RUNBOOK_RECORD), so a play can hand it to M(ffmpeg_api.ops.incident), which builds
    the incident timeline from the tasks that changed something or failed.
options:
  record_dir:
    description: Directory of the run records (created if missing).
    type: path
    default: ~/.ansible/runbook-records
    env:
      - name: FFMPEG_API_RUNBOOK_RECORD_DIR
    ini:
      - section: ffmpeg_api_runbook_record
        key: record_dir
requirements:
  - Enable it in C(callbacks_enabled) (this repository's C(ansible.cfg) does).
"""

import datetime
import getpass
import json
import os
import re

from ansible.plugins.callback import CallbackBase

ENV_VAR = "FFMPEG_API_RUNBOOK_RECORD"
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _short(text, limit=300):
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "ffmpeg_api.ops.runbook_record"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super(CallbackModule, self).__init__(*args, **kwargs)
        self._path = None
        self._check = False

    def _write(self, entry):
        if not self._path:
            return
        try:
            with open(self._path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(entry, sort_keys=True, default=str) + "\n")
        except OSError as exc:
            self._display.warning("runbook_record: cannot write %s: %s" % (self._path, exc))
            self._path = None

    def v2_playbook_on_start(self, playbook):
        from ansible import context

        directory = os.path.expanduser(self.get_option("record_dir"))
        cliargs = context.CLIARGS or {}
        self._check = bool(cliargs.get("check"))
        name = os.path.splitext(os.path.basename(playbook._file_name))[0]
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        try:
            os.makedirs(directory, mode=0o750, exist_ok=True)
        except OSError as exc:
            self._display.warning("runbook_record: cannot create %s: %s" % (directory, exc))
            return
        self._path = os.path.join(directory, "%s_%s.jsonl" % (stamp, _SAFE.sub("_", name)))
        os.environ[ENV_VAR] = self._path
        extra_names = []
        for item in cliargs.get("extra_vars") or ():
            if isinstance(item, str) and "=" in item and not item.lstrip().startswith(("{", "@")):
                extra_names.append(item.split("=", 1)[0])
        self._write(
            {
                "event": "start",
                "time": _now(),
                "playbook": os.path.abspath(playbook._file_name),
                "check_mode": self._check,
                "user": getpass.getuser(),
                "limit": cliargs.get("subset"),
                "extra_var_names": extra_names,
            }
        )

    def _result(self, result, status):
        res = result._result
        task = result._task
        censored = bool(res.get("_ansible_no_log")) or bool(getattr(task, "no_log", False))
        entry = {
            "event": "task",
            "time": _now(),
            "host": result._host.get_name(),
            "task": task.get_name(),
            "action": task.action,
            "status": status,
            "changed": bool(res.get("changed", False)),
            "check_mode": self._check or bool(getattr(task, "check_mode", False) is True),
        }
        if censored:
            entry["msg"] = "(output hidden by no_log)"
        elif res.get("msg"):
            entry["msg"] = _short(res["msg"])
        elif "results" in res and isinstance(res["results"], list):
            entry["items"] = len(res["results"])
        self._write(entry)

    def v2_runner_on_ok(self, result):
        self._result(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._result(result, "ignored" if ignore_errors else "failed")

    def v2_runner_on_unreachable(self, result):
        self._result(result, "unreachable")

    def v2_playbook_on_stats(self, stats):
        summary = {host: stats.summarize(host) for host in sorted(stats.processed)}
        self._write({"event": "stats", "time": _now(), "hosts": summary})
