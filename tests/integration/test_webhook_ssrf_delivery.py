"""Webhook SSRF (issue 14 item 2) on the real path: deliveries run as RQ jobs on the real Redis
against real local HTTP servers; submissions go through the API on the real PostgreSQL."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import redis
from rq import Queue, SimpleWorker
from rq.registry import ScheduledJobRegistry


class _Handler(BaseHTTPRequestHandler):
    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.server.seen.append((self.command, self.path, self.rfile.read(length)))
        if self.server.redirect_to:
            self.send_response(302)
            self.send_header("Location", self.server.redirect_to)
        else:
            self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = _answer

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    started = []

    def start(redirect_to=None):
        server = HTTPServer(("127.0.0.1", 0), _Handler)
        server.seen, server.redirect_to = [], redirect_to
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.shutdown()
        server.server_close()


@pytest.fixture
def redirect_pair(http_server):
    """`first` answers 302 to `inside`, standing for an internal service. Both are on loopback,
    so the first hop is allowed by WEBHOOK_ALLOW_PRIVATE; the redirect must be refused anyway."""
    inside = http_server()
    first = http_server(redirect_to=f"http://127.0.0.1:{inside.server_port}/latest/meta-data/")
    return first, inside


def _run_delivery(settings, monkeypatch, url, *, max_attempts):
    monkeypatch.setenv("WEBHOOK_SECRET", settings.webhook_secret)
    monkeypatch.setenv("WEBHOOK_ALLOW_PRIVATE", "true")
    monkeypatch.setenv("WEBHOOK_MAX_ATTEMPTS", str(max_attempts))
    monkeypatch.setenv("WEBHOOK_BACKOFF", "30")
    conn = redis.Redis.from_url(settings.redis_url)
    queue = Queue("high", connection=conn)
    job = queue.enqueue("ffmpeg_api.webhooks.deliver", url, '{"event": "job.completed"}', 1)
    SimpleWorker([queue], connection=conn).work(burst=True, with_scheduler=False)
    job.refresh()
    return conn, job


def test_redirect_is_not_followed_and_the_last_attempt_fails_visibly(
    settings, monkeypatch, redirect_pair
):
    first, inside = redirect_pair
    url = f"http://127.0.0.1:{first.server_port}/hook"
    _, job = _run_delivery(settings, monkeypatch, url, max_attempts=1)
    assert [(m, p) for m, p, _ in first.seen] == [("POST", "/hook")]
    assert inside.seen == []
    assert job.is_failed
    failure = job.latest_result().exc_string
    assert "failed after 1 attempts" in failure
    assert "answered 302" in failure and "redirects are not followed" in failure


def test_redirect_counts_as_a_failed_attempt_and_is_retried(settings, monkeypatch, redirect_pair):
    first, inside = redirect_pair
    url = f"http://127.0.0.1:{first.server_port}/hook"
    conn, job = _run_delivery(settings, monkeypatch, url, max_attempts=3)
    assert inside.seen == []
    result = job.latest_result().return_value
    assert result["delivered"] is False and result["status"] == 302
    assert "redirects are not followed" in result["error"]
    scheduled = ScheduledJobRegistry("high", connection=conn)
    (retry_id,) = scheduled.get_job_ids()
    retry = Queue("high", connection=conn).fetch_job(retry_id)
    assert retry.func_name == "ffmpeg_api.webhooks.deliver" and retry.args[2] == 2


def test_submission_refuses_carrier_grade_nat_metadata_address(make_settings, make_key, clips):
    from ffmpeg_api.api import create_app

    client = create_app(make_settings(webhook_allow_private=False)).test_client()
    r = client.post(
        "/api/v1/convert",
        headers=make_key()["headers"],
        json={
            "input": clips["short.mp4"],
            "operations": [{"type": "transcode"}],
            "webhook_url": "http://100.100.100.200/latest/meta-data/",
        },
    )
    assert r.status_code == 422 and r.json["error"]["field"] == "webhook_url"
    assert "internal address (100.100.100.200)" in r.json["error"]["message"]
