"""Issue 15 item 7: gunicorn started the way the api role starts it logs no control-socket error.

The role runs gunicorn as the service user, whose home (the app root) is owned by root and not
writable by it; gunicorn >= 25.1 tries to create `$HOME/.gunicorn/gunicorn.ctl` at start. The
test runs the real gunicorn with the same config module and a home it cannot write: the tests
run as root, so CAP_DAC_OVERRIDE is dropped (setpriv) for the permission bits to apply.
"""

import os
import shutil
import sys
import tempfile

import gunicorn
import pytest
import requests
from helpers import wait_for

from servers import free_port

# The markers gunicorn's arbiter logs once it has decided about its control socket.
DISABLED = "Control socket disabled"
FAILED = ("Control server error", "Failed to start control socket")


def _version(text):
    return tuple(int(p) for p in text.split(".")[:2])


@pytest.mark.skipif(
    _version(gunicorn.__version__) < (25, 1), reason="gunicorn has a control socket from 25.1"
)
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) is needed")
def test_gunicorn_starts_without_a_control_socket_error(settings, spawn, tmp_path):
    home = tmp_path / "app-root"  # like /opt/ffmpeg-api: owned by root, 0755, no write for us
    home.mkdir()
    home.chmod(0o555)
    port = free_port()
    args = [sys.executable, "-m", "gunicorn", "-c", "python:ffmpeg_api.gunicorn_conf"]
    args += ["ffmpeg_api.wsgi:app"]
    if os.geteuid() == 0:
        args = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", *args]
    proc = spawn(
        args,
        settings,
        name="gunicorn",
        extra_env={
            "HOME": str(home),
            "XDG_RUNTIME_DIR": "",  # gunicorn prefers it when set: the role's units do not set it
            "GUNICORN_BIND": f"127.0.0.1:{port}",
            "GUNICORN_WORKERS": "1",
            "PROMETHEUS_MULTIPROC_DIR": tempfile.mkdtemp(prefix="prom-"),
            "LOG_LEVEL": "DEBUG",  # gunicorn says at debug level that the socket is off
        },
    )

    def decided():
        if proc.popen.poll() is not None:
            raise AssertionError("gunicorn exited:\n" + proc.log())
        log = proc.log()
        return DISABLED in log or any(marker in log for marker in FAILED)

    wait_for(decided, timeout=30, what="gunicorn's control-socket decision")

    def answers():
        try:
            return requests.get(f"http://127.0.0.1:{port}/api/v1/health/live", timeout=2).ok
        except requests.ConnectionError:
            return False

    wait_for(answers, timeout=30, what="gunicorn answering")
    log = proc.log()
    assert not [m for m in FAILED if m in log], log
    assert "Permission denied" not in log, log
    assert DISABLED in log
    assert not (home / ".gunicorn").exists()
