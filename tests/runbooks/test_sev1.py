"""SEV1 complete outage: the API and workers are down; the playbook brings them back under
maintenance mode, rolls back to the previous release, notifies, and writes the report."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from runbook_helpers import (
    admin,
    assert_check_mode_changes_nothing,
    http,
    playbook,
    redis_client,
    wait_for,
)

APP_ROOT = "/opt/ffmpeg-api"


class Webhook(ThreadingHTTPServer):
    """Receives the incident notifications."""

    def __init__(self):
        self.received: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                outer.received.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


def supervisor_states() -> dict[str, str]:
    out = subprocess.run(
        ["supervisorctl", "status"], capture_output=True, text=True, check=False
    ).stdout
    return {line.split()[0]: line.split()[1] for line in out.splitlines() if line.strip()}


def release_of(link: str) -> str:
    return os.path.basename(os.readlink(link))


@pytest.fixture
def previous_release(stack):
    """A second installed release recorded as `previous` (a copy of the current one), so the
    rollback has somewhere to go; the original link and previous file are put back after."""
    current = release_of(f"{APP_ROOT}/current")
    copy = f"{current}-sev1-test"
    shutil.copytree(f"{APP_ROOT}/releases/{current}", f"{APP_ROOT}/releases/{copy}", symlinks=True)
    previous_file = f"{APP_ROOT}/previous"
    saved = open(previous_file).read() if os.path.exists(previous_file) else None
    with open(previous_file, "w") as fh:
        fh.write(f"{APP_ROOT}/releases/{copy}\n")
    yield current, copy
    tmp = f"{APP_ROOT}/current.test-tmp"
    os.symlink(f"{APP_ROOT}/releases/{current}", tmp)
    os.rename(tmp, f"{APP_ROOT}/current")
    if saved is None:
        os.unlink(previous_file)
    else:
        with open(previous_file, "w") as fh:
            fh.write(saved)
    for leftover in ("rolled-back-from",):
        if os.path.exists(f"{APP_ROOT}/{leftover}"):
            os.unlink(f"{APP_ROOT}/{leftover}")
    subprocess.run(["supervisorctl", "restart", "ffmpeg-api", "ffmpeg-api-worker:"], check=False)
    shutil.rmtree(f"{APP_ROOT}/releases/{copy}", ignore_errors=True)
    wait_for("the API after the test", lambda: http("GET", "/health")[0] == 200, timeout=60)


def test_sev1_outage_is_mitigated_rolled_back_and_reported(stack, previous_release, tmp_path):
    _current, copy = previous_release
    hook = Webhook()
    incident_dir = tmp_path / "incidents"
    # No incident_id given: the playbook names the incident after the day.
    incident_id = f"INC-{datetime.datetime.now(datetime.UTC):%Y%m%d}-sev1-outage"
    extra = {
        "incident_dir": str(incident_dir),
        "incident_webhook_url": hook.url,
        "sev1_rollback": True,
        "sev1_logs_since": "10 minutes ago",
    }
    try:
        # The fault: every API and worker process is down.
        subprocess.run(["supervisorctl", "stop", "ffmpeg-api", "ffmpeg-api-worker:"], check=True)
        wait_for("HAProxy to see no API", lambda: http("GET", "/health/live")[0] == 503)

        def snapshot():
            r = redis_client()
            return (
                supervisor_states(),
                release_of(f"{APP_ROOT}/current"),
                sorted(r.keys("ffmpeg_api:maintenance*")),
                sorted(os.listdir(incident_dir)) if incident_dir.exists() else [],
                len(hook.received),
            )

        assert_check_mode_changes_nothing("sev1_outage.yml", snapshot, extra_vars=extra)

        run = playbook("sev1_outage.yml", extra_vars=extra)
        print(f"sev1 repair: {run.elapsed:.0f} s")
        status, health = http("GET", "/health")
        assert status == 200, health
        assert admin("maintenance", "status")["enabled"] is False
        assert release_of(f"{APP_ROOT}/current") == copy, "not rolled back to the previous release"
        assert all(v == "RUNNING" for k, v in supervisor_states().items() if "ffmpeg-api" in k)
        assert [m["event"] for m in hook.received] == ["opened", "resolved"], hook.received

        report = (incident_dir / f"{incident_id}.md").read_text()
        assert "**Severity:** SEV1" in report and "**Status:** resolved" in report
        assert "not running at diagnosis: ffmpeg-api" in report, report
        for event in (
            "Maintenance mode on",
            "Roll back to the previous",
            "restarted on",
            "Maintenance mode off",
        ):
            assert event in report, report
        bundles = list((incident_dir / f"{incident_id}-diagnostics").iterdir())
        assert bundles and all(b.stat().st_size > 0 for b in bundles), bundles

        again = playbook("sev1_outage.yml", extra_vars=extra)
        assert again.changed == 0, again.changed_tasks()
        assert len(hook.received) == 2, "a second run notified again"
        assert (incident_dir / f"{incident_id}.md").read_text() == report
    finally:
        hook.shutdown()
        subprocess.run(["supervisorctl", "start", "ffmpeg-api", "ffmpeg-api-worker:"], check=False)
        r = redis_client()
        for key in r.keys("ffmpeg_api:maintenance*"):
            r.delete(key)
