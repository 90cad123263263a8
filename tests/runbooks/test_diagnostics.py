"""Collect diagnostics: one scrubbed bundle per host, with services, releases and recent logs.

The "fault" is an incident worth collecting: a fresh service log line that carries a database
password, which the bundle must include with the password scrubbed.
"""

from __future__ import annotations

import os
import tarfile
import time

from runbook_helpers import REPO, assert_second_run_changes_nothing, playbook

DEST = "/var/tmp/ffmpeg-api-diagnostics"
LEAKED = "leakedPassw0rd"


def test_collect_diagnostics_bundle(stack):
    name = f"test-diag-{os.getpid()}-{time.time_ns()}"
    log = f"/var/log/ffmpeg-api/diag-test-{os.getpid()}.log"
    bundle = os.path.join(DEST, f"{name}.tar.gz")
    fetched = os.path.join(REPO, "var", "diagnostics", "localhost", f"{name}.tar.gz")
    extra = {"diagnostics_name": name, "diagnostics_since": "10m"}
    try:
        with open(log, "w") as fh:
            fh.write(f"connect failed: postgresql://ffmpeg_user:{LEAKED}@127.0.0.1:5432/x\n")

        playbook("collect_diagnostics.yml", extra_vars=extra, check=True)
        assert not os.path.exists(bundle), "check mode wrote a bundle"

        run = playbook("collect_diagnostics.yml", extra_vars=extra)
        assert LEAKED not in run.out
        assert os.path.exists(bundle) and os.path.exists(fetched)
        with tarfile.open(fetched) as tar:
            names = {n.split("/", 1)[1]: n for n in tar.getnames()}
            for wanted in (
                "services/supervisorctl-status.txt",
                "releases.txt",
                "memory/meminfo.txt",
                "disk/df.txt",
                "kernel/oom-kills.txt",
                "logs" + log,
            ):
                assert wanted in names, f"{wanted} missing from {sorted(names)}"
            text = {k: tar.extractfile(v).read().decode() for k, v in names.items()}
        assert "ffmpeg-api" in text["services/supervisorctl-status.txt"]
        current = os.path.basename(os.path.realpath("/opt/ffmpeg-api/current"))
        assert f"current -> {current}" in text["releases.txt"]
        assert "postgresql://ffmpeg_user:***@127.0.0.1" in text["logs" + log]
        assert all(LEAKED not in body for body in text.values()), "a password reached the bundle"

        assert_second_run_changes_nothing("collect_diagnostics.yml", extra_vars=extra)
    finally:
        for path in (log, bundle, fetched):
            if os.path.exists(path):
                os.unlink(path)
