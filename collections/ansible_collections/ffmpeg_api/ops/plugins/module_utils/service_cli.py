# Copyright: FFmpeg API Ops team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run the service's admin CLI (`ffmpeg-api`) from a module.

The service owns every domain rule (job states, keys, maintenance, storage); modules reach it
only through this CLI, which prints one JSON document with `--json` and previews itself with
`--dry-run`. Exit codes: 0 ok, 1 failure, 2 bad usage.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os

DEFAULT_CLI = "/usr/local/bin/ffmpeg-api-admin"


def service_cli_argument_spec():
    return dict(cli=dict(type="path", default=DEFAULT_CLI))


class ServiceCLIError(Exception):
    def __init__(self, message, rc=None, stdout="", stderr="", cmd=None):
        super(ServiceCLIError, self).__init__(message)
        self.message = message
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr
        self.cmd = cmd


def build_argv(cli, args, dry_run=False):
    """The argv for one CLI call: the arguments, `--json`, and `--dry-run` when previewing.

    None values and False flags are dropped so callers can pass optional options inline.
    """
    argv = [cli]
    for arg in args:
        if arg is None or arg is False:
            continue
        argv.append(str(arg))
    argv.append("--json")
    if dry_run:
        argv.append("--dry-run")
    return argv


def parse_output(argv, rc, stdout, stderr):
    """The CLI's JSON document, or ServiceCLIError with the most readable message available."""
    data = None
    text = (stdout or "").strip()
    if text:
        try:
            data = json.loads(text)
        except ValueError:
            data = None
    command = " ".join(argv[1:])
    if rc != 0:
        message = None
        if isinstance(data, dict) and isinstance(data.get("error"), dict):
            message = data["error"].get("message")
        if not message:
            message = (stderr or "").strip().splitlines()[-1:] or ["no output"]
            message = message[0]
        raise ServiceCLIError(
            "ffmpeg-api %s failed (exit %s): %s" % (command, rc, message),
            rc=rc,
            stdout=stdout,
            stderr=stderr,
            cmd=command,
        )
    if data is None:
        raise ServiceCLIError(
            "ffmpeg-api %s printed no JSON document" % command,
            rc=rc,
            stdout=stdout,
            stderr=stderr,
            cmd=command,
        )
    return data


class ServiceCLI(object):
    """Calls the CLI for one module; failures end the module with fail_json."""

    def __init__(self, module):
        self.module = module
        self.cli = module.params.get("cli") or DEFAULT_CLI

    def run(self, *args, **kwargs):
        dry_run = kwargs.pop("dry_run", False)
        if kwargs:
            raise TypeError("unexpected arguments: %s" % ", ".join(sorted(kwargs)))
        if not os.access(self.cli, os.X_OK):
            self.module.fail_json(
                msg="the service's admin CLI %s is missing or not executable: deploy the service "
                "(playbooks/site.yml) on this host first" % self.cli
            )
        argv = build_argv(self.cli, args, dry_run=dry_run)
        rc, stdout, stderr = self.module.run_command(argv)
        try:
            return parse_output(argv, rc, stdout, stderr)
        except ServiceCLIError as exc:
            self.module.fail_json(msg=exc.message, rc=exc.rc, stderr=exc.stderr, cmd=exc.cmd)
