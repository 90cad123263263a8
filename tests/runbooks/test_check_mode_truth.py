"""Check mode tells the truth (issue 16, item 3): a role previewed against a host where its step
really fails must fail, not swallow the error.

The worker role's program file is in place and unchanged, but supervisord no longer knows the
program (removed behind Ansible's back): a real run cannot start the workers, so `--check` must
fail too. (It passed before: the supervisor steps had `ignore_errors: "{{ ansible_check_mode }}"`.)
Then supervisord gets the program back, and the same preview passes with nothing to change.
"""

from __future__ import annotations

import subprocess

from runbook_helpers import playbook, wait_for, workers_registered

PROGRAM = "ffmpeg-api-worker"


def supervisorctl(*args: str) -> str:
    proc = subprocess.run(["supervisorctl", *args], capture_output=True, text=True, timeout=120)
    return proc.stdout + proc.stderr


def test_check_mode_fails_where_the_real_run_would(stack):
    assert "RUNNING" in supervisorctl("status", f"{PROGRAM}:")
    supervisorctl("stop", f"{PROGRAM}:")
    supervisorctl("remove", PROGRAM)
    try:
        assert "no such" in supervisorctl("status", f"{PROGRAM}:").lower()
        broken = playbook("site.yml", "--tags", "app,worker", check=True, expect_rc=None)
        assert broken.rc != 0, broken.out[-4000:]
        assert "no such process" in broken.out.lower(), broken.out[-4000:]
    finally:
        supervisorctl("add", PROGRAM)
        supervisorctl("start", f"{PROGRAM}:")
    wait_for("the workers to register again", workers_registered, timeout=60)
    fine = playbook("site.yml", "--tags", "app,worker", check=True)
    assert all(h["changed"] == 0 for h in fine.recap.values()), fine.out[-4000:]
