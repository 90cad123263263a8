"""Session-wide real servers (PostgreSQL, Redis), a migrated database, and helpers to run the
service's real processes (gunicorn, RQ workers) against them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import replace

import psycopg
import pytest
import requests

from ffmpeg_api import db as dbmod
from ffmpeg_api import keys as keymod
from ffmpeg_api.settings import Settings

sys.path.insert(0, os.path.dirname(__file__))
from helpers import Proc, env_for, lavfi_clip, wait_for

from servers import free_port, service_servers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def servers(tmp_path_factory):
    with service_servers(tempfile.mkdtemp(prefix="ffmpeg-api-test-")) as (pg, rd, _url):
        yield {"pg": pg, "redis": rd}


@pytest.fixture(scope="session")
def storage_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("storage")
    for sub in ("uploads", "output", "tmp"):
        (root / sub).mkdir()
    return str(root)


@pytest.fixture(scope="session")
def base_settings(servers, storage_root):
    return Settings(
        database_url=servers["pg"].url("ffmpeg_api"),
        redis_url=servers["redis"].url(),
        storage_root=storage_root,
        job_heartbeat_interval=0.5,
        job_heartbeat_timeout=3.0,
        orphan_scan_interval=1.0,
        webhook_secret="test-webhook-secret",
        webhook_allow_private=True,
        webhook_backoff=0.5,
        access_log=os.path.join(storage_root, "..", "access.log"),
        rate_limit_per_minute=10000,
        max_upload_bytes=50 * 1024 * 1024,
    )


@pytest.fixture
def settings(base_settings):
    """Clean state for every test: empty tables, empty Redis."""
    with psycopg.connect(base_settings.database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE jobs, uploads, api_keys")
    import redis

    redis.Redis.from_url(base_settings.redis_url).flushdb()
    return base_settings


@pytest.fixture
def make_settings(settings):
    def make(**changes):
        return replace(settings, **changes)

    return make


@pytest.fixture
def app(settings):
    from ffmpeg_api.api import create_app

    application = create_app(settings)
    application.config["TESTING"] = True
    return application


@pytest.fixture
def client(app):
    return app.test_client()


def _make_key(settings, *, admin=False, user="alice", name="test"):
    with dbmod.connect(settings.database_url) as conn:
        key, raw = keymod.create(conn, name=name, user_id=user, is_admin=admin)
        conn.commit()
    return {"id": key["id"], "raw": raw, "headers": {"X-API-Key": raw}}


@pytest.fixture
def make_key(settings):
    def make(**kw):
        return _make_key(settings, **kw)

    return make


@pytest.fixture
def user_key(settings):
    return _make_key(settings, user="alice", name="alice-main")


@pytest.fixture
def admin_key(settings):
    return _make_key(settings, admin=True, user="ops", name="ops-admin")


@pytest.fixture
def clips(clip_files, settings):
    """The session's clips, recorded as uploads of user "alice" (the user of `user_key` and of
    `make_key()`): a path is usable only by its owner or an admin key."""
    with dbmod.connect(settings.database_url) as conn:
        for path in clip_files.values():
            conn.execute(
                "INSERT INTO uploads (path, user_id, size, sha256) VALUES (%s, 'alice', %s, '')",
                (path, os.path.getsize(os.path.join(settings.storage_root, path))),
            )
        conn.commit()
    return clip_files


@pytest.fixture(scope="session")
def clip_files(storage_root):
    """Small generated media under the storage root (lavfi), shared by the session."""
    out = os.path.join(storage_root, "uploads", "clips")
    os.makedirs(out, exist_ok=True)
    specs = {
        "short.mp4": {"size": "320x240", "seconds": 3, "tone": 440},
        "long.mp4": {"size": "640x360", "seconds": 40, "tone": 300},
    }
    paths = {}
    for name, spec in specs.items():
        path = os.path.join(out, name)
        if not os.path.exists(path):
            lavfi_clip(path, **spec)
        paths[name] = os.path.relpath(path, storage_root)
    return paths


@pytest.fixture
def spawn(tmp_path):
    procs: list[Proc] = []

    def start(args, settings: Settings, *, name="proc", extra_env=None) -> Proc:
        log_path = str(tmp_path / f"{name}-{len(procs)}.log")
        env = env_for(settings)
        env.update(extra_env or {})
        popen = subprocess.Popen(
            args,
            env=env,
            stdout=open(log_path, "w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=REPO,
        )
        proc = Proc(popen, log_path)
        procs.append(proc)
        return proc

    yield start
    for p in procs:
        p.stop()
        # Work horses run in their own sessions: make sure none outlives the test.
        for pid in p.descendants():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def start_worker(spawn):
    def start(settings: Settings, *, kind="cpu", name=None, extra_env=None) -> Proc:
        args = [sys.executable, "-m", "ffmpeg_api.cli", "worker", "--kind", kind]
        if name:
            args += ["--name", name]
        proc = spawn(args, settings, name=f"worker-{kind}", extra_env=extra_env)
        wait_for(
            lambda: (
                "Listening on" in proc.log()
                or "*** Listening" in proc.log()
                or proc.popen.poll() is not None
            ),
            timeout=20,
            what="worker start",
        )
        if kind == "cpu":
            assert proc.popen.poll() is None, "worker exited at start:\n" + proc.log()
        return proc

    return start


@pytest.fixture
def start_api(spawn):
    def start(settings: Settings, *, workers=2, extra_env=None) -> str:
        port = free_port()
        env = {
            "GUNICORN_BIND": f"127.0.0.1:{port}",
            "GUNICORN_WORKERS": str(workers),
            "PROMETHEUS_MULTIPROC_DIR": tempfile.mkdtemp(prefix="prom-"),
        }
        env.update(extra_env or {})
        proc = spawn(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-c",
                "python:ffmpeg_api.gunicorn_conf",
                "ffmpeg_api.wsgi:app",
            ],
            settings,
            name="gunicorn",
            extra_env=env,
        )
        url = f"http://127.0.0.1:{port}"

        def up():
            if proc.popen.poll() is not None:
                raise RuntimeError("gunicorn exited:\n" + proc.log())
            try:
                return requests.get(url + "/api/v1/health/live", timeout=5).ok
            except (requests.ConnectionError, requests.Timeout):
                return False  # not listening yet, or still loading under load

        wait_for(up, timeout=30, what="gunicorn")
        return url

    return start


@pytest.fixture
def db_conn(settings):
    with dbmod.connect(settings.database_url) as conn:
        yield conn
