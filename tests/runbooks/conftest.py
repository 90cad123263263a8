"""Fixtures of the runbooks layer (helpers live in runbook_helpers.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import time

import pytest
from runbook_helpers import (
    ADMIN,
    REPO,
    VENV_BIN,
    _deployed_release_is_current,
    admin,
    ansible_env,
    http,
    service_env,
    wait_for,
)

from servers import free_port


def pytest_collection_modifyitems(config, items):
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="drives system services: needs root")
        for item in items:
            if "tests/runbooks/" in str(item.fspath):
                item.add_marker(skip)


@pytest.fixture(scope="session")
def stack():
    """The deployed stack (deploying it first when absent or stale); its service environment."""
    status, _ = (0, None)
    try:
        status, _ = http("GET", "/health")
    except OSError:
        status = 0
    if status != 200 or not _deployed_release_is_current():
        proc = subprocess.run(
            [os.path.join(REPO, "playbooks", "deploy-local")],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=1500,
            env=ansible_env(),
        )
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    return service_env()


@pytest.fixture
def api_key(stack):
    """A fresh API key of a throw-away user; revoked afterwards."""
    user = f"runbook-test-{os.getpid()}-{time.monotonic_ns()}"
    created = admin("keys", "create", "--user", user, "--name", "runbooks")
    yield created
    subprocess.run([ADMIN, "keys", "revoke", str(created["id"]), "--json"], capture_output=True)


@pytest.fixture
def moto_endpoint():
    """A moto server (S3, EC2, ...) on a free loopback port: its endpoint URL."""
    port = free_port()
    server = subprocess.Popen(
        [os.path.join(VENV_BIN, "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"

    def up():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            return False

    try:
        wait_for("the moto server", up, timeout=30, interval=0.2)
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=10)
