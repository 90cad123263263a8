"""The HTTP API against real PostgreSQL and Redis (no worker needed): auth, limits, admin,
validation and safety of inputs."""

import json
import os
import re

import psycopg
import pytest
import redis

from ffmpeg_api import control


def test_health_live_needs_nothing(client):
    r = client.get("/api/v1/health/live")
    assert r.status_code == 200 and r.json == {"status": "alive"}


def test_health_reports_every_component(client, settings, user_key):
    r = client.get("/api/v1/health", headers=user_key["headers"])
    body = r.json
    assert set(body["components"]) == {
        "database",
        "redis",
        "queues",
        "workers",
        "storage",
        "ffmpeg",
        "maintenance",
    }
    assert body["components"]["database"]["status"] == "ok"
    assert body["components"]["database"]["ms"] >= 0
    assert body["components"]["ffmpeg"]["version"].startswith(("5.", "6.", "7.", "n"))
    assert set(body["components"]["queues"]["depths"]) == {
        "high",
        "default",
        "low",
        "gpu",
        "failed",
    }
    assert body["components"]["storage"]["writable"] is True
    # No worker runs in this test: degraded, not unhealthy.
    assert body["components"]["workers"]["status"] == "warning"
    assert body["status"] == "degraded" and r.status_code == 200


def test_health_unhealthy_when_database_down(make_settings, app):
    from ffmpeg_api.api import create_app

    # No database to check a key against: the metrics token shows the details.
    broken = make_settings(
        database_url="postgresql://nobody@127.0.0.1:1/none", metrics_token="scrape-token"
    )
    r = (
        create_app(broken)
        .test_client()
        .get("/api/v1/health", headers={"Authorization": "Bearer scrape-token"})
    )
    assert r.status_code == 503
    assert r.json["status"] == "unhealthy"
    assert r.json["components"]["database"]["status"] == "error"
    assert r.json["components"]["redis"]["status"] == "ok"


@pytest.mark.parametrize(
    "headers,status,code",
    [
        ({}, 401, "unauthorized"),
        ({"X-API-Key": "fk_wrong"}, 401, "unauthorized"),
        ({"X-API-Key": "fk_abcdefabcdef_" + "A" * 43}, 401, "unauthorized"),
    ],
)
def test_missing_or_wrong_key(client, user_key, headers, status, code):
    r = client.get("/api/v1/jobs", headers=headers)
    assert r.status_code == status and r.json["error"]["code"] == code


def test_right_id_wrong_secret_is_refused_and_not_counted(client, user_key, settings, db_conn):
    forged = user_key["raw"][:-5] + "AAAAA"
    assert client.get("/api/v1/jobs", headers={"X-API-Key": forged}).status_code == 401
    row = db_conn.execute(
        "SELECT request_count FROM api_keys WHERE id = %s", (user_key["id"],)
    ).fetchone()
    assert row["request_count"] == 0


def test_key_accepted_in_both_headers(client, user_key):
    assert client.get("/api/v1/jobs", headers=user_key["headers"]).status_code == 200
    bearer = {"Authorization": f"Bearer {user_key['raw']}"}
    assert client.get("/api/v1/jobs", headers=bearer).status_code == 200


def test_revoked_key_gets_401(client, user_key, admin_key):
    r = client.post(
        f"/api/v1/admin/keys/{user_key['id']}/revoke",
        headers=admin_key["headers"],
        json={"reason": "leaked"},
    )
    assert r.status_code == 200 and r.json["changed"] is True
    r = client.get("/api/v1/jobs", headers=user_key["headers"])
    assert r.status_code == 401
    again = client.post(f"/api/v1/admin/keys/{user_key['id']}/revoke", headers=admin_key["headers"])
    assert again.json["changed"] is False


def test_non_admin_cannot_use_admin_endpoints(client, user_key):
    for method, path in [
        ("get", "/api/v1/admin/keys"),
        ("put", "/api/v1/admin/maintenance"),
        ("get", "/api/v1/admin/stats"),
        ("put", "/api/v1/admin/ratelimit"),
    ]:
        r = getattr(client, method)(path, headers=user_key["headers"], json={})
        assert r.status_code == 403, path
        assert r.json["error"]["code"] == "forbidden"


def test_keys_stored_only_as_hashes(client, admin_key, db_conn):
    r = client.post(
        "/api/v1/admin/keys", headers=admin_key["headers"], json={"name": "ci", "user_id": "bob"}
    )
    assert r.status_code == 201
    raw = r.json["api_key"]
    rows = db_conn.execute("SELECT * FROM api_keys").fetchall()
    dump = json.dumps(rows, default=str)
    # The secret is everything after "fk_<id>_" (it may itself contain "_").
    secret = raw.split("_", 2)[2]
    assert len(secret) >= 40 and raw not in dump and secret not in dump
    listed = client.get("/api/v1/admin/keys", headers=admin_key["headers"]).json["keys"]
    assert raw not in json.dumps(listed)


def test_key_usage_and_listing_order(client, admin_key, make_key):
    quiet = make_key(user="carol", name="quiet")
    busy = make_key(user="dave", name="busy")
    for _ in range(3):
        client.get("/api/v1/jobs", headers=busy["headers"])
    client.get("/api/v1/jobs", headers=quiet["headers"])
    by_requests = client.get("/api/v1/admin/keys?sort=requests", headers=admin_key["headers"]).json[
        "keys"
    ]
    assert by_requests[0]["id"] == busy["id"] and by_requests[0]["request_count"] == 3
    recent = client.get("/api/v1/admin/keys?sort=recent", headers=admin_key["headers"]).json["keys"]
    assert recent[0]["id"] == admin_key["id"]  # the admin's own listing request is the latest
    usage = client.get(f"/api/v1/admin/keys/{busy['id']}/usage", headers=admin_key["headers"]).json
    assert usage["request_count"] == 3 and usage["output_bytes_24h"] == 0
    assert usage["last_used_at"] is not None


def test_rotate_user_revokes_all_and_issues_replacements(client, admin_key, make_key):
    a = make_key(user="erin", name="a")
    b = make_key(user="erin", name="b")
    other = make_key(user="frank", name="c")
    r = client.post("/api/v1/admin/users/erin/rotate-keys", headers=admin_key["headers"])
    assert r.status_code == 200
    assert {k["id"] for k in r.json["revoked"]} == {a["id"], b["id"]}
    new_keys = [k["key"] for k in r.json["created"]]
    assert len(new_keys) == 2
    for old in (a, b):
        assert client.get("/api/v1/jobs", headers=old["headers"]).status_code == 401
    for raw in new_keys:
        assert client.get("/api/v1/jobs", headers={"X-API-Key": raw}).status_code == 200
    assert client.get("/api/v1/jobs", headers=other["headers"]).status_code == 200


def test_maintenance_mode_answers_503_except_health(client, settings, user_key, admin_key):
    r = client.put(
        "/api/v1/admin/maintenance",
        headers=admin_key["headers"],
        json={"ttl": 120, "reason": "db restore"},
    )
    assert r.status_code == 200 and r.json["enabled"] and 0 < r.json["ttl"] <= 120
    r = client.get("/api/v1/jobs", headers=user_key["headers"])
    assert r.status_code == 503
    assert 0 < int(r.headers["Retry-After"]) <= 120
    assert r.json["error"]["code"] == "unavailable"
    assert client.post("/api/v1/convert", headers=user_key["headers"], json={}).status_code == 503
    assert client.get("/api/v1/health/live").status_code == 200
    health = client.get("/api/v1/health", headers=user_key["headers"]).json
    assert health["components"]["maintenance"]["enabled"] is True
    r = client.delete("/api/v1/admin/maintenance", headers=admin_key["headers"])
    assert r.json["enabled"] is False
    assert client.get("/api/v1/jobs", headers=user_key["headers"]).status_code == 200


def test_maintenance_ttl_expires_by_itself(client, settings, user_key):
    conn = redis.Redis.from_url(settings.redis_url)
    control.maintenance_on(conn, ttl=1)
    assert client.get("/api/v1/jobs", headers=user_key["headers"]).status_code == 503
    import time

    time.sleep(1.6)
    assert client.get("/api/v1/jobs", headers=user_key["headers"]).status_code == 200


def test_per_key_rate_limit_answers_429_with_retry_after(client, admin_key, settings):
    r = client.post(
        "/api/v1/admin/keys",
        headers=admin_key["headers"],
        json={"name": "slow", "user_id": "gina", "rate_limit": 3},
    )
    headers = {"X-API-Key": r.json["api_key"]}
    codes = [client.get("/api/v1/jobs", headers=headers).status_code for _ in range(5)]
    assert codes == [200, 200, 200, 429, 429]
    r = client.get("/api/v1/jobs", headers=headers)
    assert 1 <= int(r.headers["Retry-After"]) <= 60
    assert r.json["error"]["code"] == "rate_limited"
    metrics = client.get("/metrics").data.decode()
    # The series exists from the start (at 0): the refusals must have counted.
    assert re.search(r'^rate_limit_exceeded_total\{scope="key"\} [1-9]', metrics, re.M), metrics


def test_global_limit_and_ddos_mode(client, admin_key, user_key, make_settings):
    r = client.put(
        "/api/v1/admin/ratelimit", headers=admin_key["headers"], json={"global_per_minute": 4}
    )
    assert r.json["global_per_minute"] == 4
    codes = [client.get("/api/v1/jobs", headers=user_key["headers"]).status_code for _ in range(4)]
    assert 429 in codes
    conn = redis.Redis.from_url(make_settings().redis_url)
    control.set_global_limit(conn, 0)
    for key in conn.scan_iter("ffmpeg_api:rl:*"):
        conn.delete(key)
    r = client.put("/api/v1/admin/ddos", headers=admin_key["headers"], json={"enabled": True})
    assert r.json["ddos_protection"] is True


def test_ddos_mode_limits_per_client_ip(make_settings, make_key):
    from ffmpeg_api.api import create_app

    s = make_settings(ddos_ip_rate_limit_per_minute=3)
    conn = redis.Redis.from_url(s.redis_url)
    control.set_ddos(conn, True)
    client = create_app(s).test_client()
    key = make_key()
    # The peer is a trusted proxy (127.0.0.1) so X-Forwarded-For names the client.
    attacker = {**key["headers"], "X-Forwarded-For": "198.51.100.66"}
    other = {**key["headers"], "X-Forwarded-For": "198.51.100.67"}
    codes = [client.get("/api/v1/jobs", headers=attacker).status_code for _ in range(5)]
    assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429]
    assert client.get("/api/v1/jobs", headers=other).status_code == 200


def test_malformed_json_is_a_clear_400(client, user_key):
    r = client.post(
        "/api/v1/convert",
        headers={**user_key["headers"], "Content-Type": "application/json"},
        data="{not json",
    )
    assert r.status_code == 400 and "malformed JSON" in r.json["error"]["message"]


def test_unknown_route_and_method_are_json(client):
    assert client.get("/api/v1/nope").json["error"]["code"] == "not_found"
    assert client.put("/api/v1/health/live").status_code == 405


def _count_jobs(db_conn):
    db_conn.rollback()
    return db_conn.execute("SELECT count(*) AS n FROM jobs").fetchone()["n"]


@pytest.mark.parametrize(
    "body,field",
    [
        ({"input": "../../etc/passwd", "operations": [{"type": "transcode"}]}, "input"),
        ({"input": "/etc/passwd", "operations": [{"type": "transcode"}]}, "input"),
        (
            {"input": "CLIP", "operations": [{"type": "transcode", "video_codec": "divx"}]},
            "operations[0].video_codec",
        ),
        ({"input": "CLIP", "operations": [{"type": "explode"}]}, "operations[0].type"),
        (
            {"input": "CLIP", "operations": [{"type": "transcode"}], "priority": "urgent"},
            "priority",
        ),
        ({"input": "CLIP", "operations": [{"type": "transcode"}], "colour": "red"}, "colour"),
        ({"input": "CLIP", "operations": []}, "operations"),
        ({"input": "CLIP"}, "operations"),
        ({"input": "uploads/none.mp4", "operations": [{"type": "transcode"}]}, "input"),
        (
            {
                "input": "CLIP",
                "operations": [{"type": "transcode"}],
                "webhook_url": "ftp://example.com/x",
            },
            "webhook_url",
        ),
    ],
)
def test_bad_submissions_are_refused_and_nothing_stored(
    client, user_key, clips, db_conn, body, field
):
    if body.get("input") == "CLIP":
        body = {**body, "input": clips["short.mp4"]}
    r = client.post("/api/v1/convert", headers=user_key["headers"], json=body)
    assert 400 <= r.status_code < 500, r.json
    assert r.json["error"]["message"]
    assert r.json["error"].get("field", "").startswith(field.split("[")[0]), r.json
    assert _count_jobs(db_conn) == 0


def test_symlink_escape_is_refused(client, user_key, storage_root, db_conn):
    link = os.path.join(storage_root, "uploads", "evil-link")
    if not os.path.islink(link):
        os.symlink("/etc/passwd", link)
    r = client.post(
        "/api/v1/convert",
        headers=user_key["headers"],
        json={"input": "uploads/evil-link", "operations": [{"type": "transcode"}]},
    )
    assert r.status_code == 400 and r.json["error"]["code"] == "invalid_path"
    assert _count_jobs(db_conn) == 0


@pytest.mark.parametrize(
    "playlist",
    [
        "#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n/etc/passwd\n#EXT-X-ENDLIST\n",
        "ffconcat version 1.0\nfile '/etc/passwd'\n",
    ],
)
def test_playlists_cannot_read_local_files(client, user_key, db_conn, playlist):
    up = client.post(
        "/api/v1/files?name=evil.m3u8",
        headers=user_key["headers"],
        data=playlist.encode(),
        content_type="application/octet-stream",
    )
    assert up.status_code == 201
    r = client.post(
        "/api/v1/convert",
        headers=user_key["headers"],
        json={"input": up.json["path"], "operations": [{"type": "transcode"}]},
    )
    assert r.status_code == 422 and r.json["error"]["code"] == "input_rejected"
    assert _count_jobs(db_conn) == 0


def test_raw_and_multipart_uploads(client, user_key, storage_root):
    data = os.urandom(200_000)
    raw = client.post(
        "/api/v1/files?name=a.bin",
        headers=user_key["headers"],
        data=data,
        content_type="application/octet-stream",
    )
    assert raw.status_code == 201 and raw.json["size"] == 200_000
    import hashlib
    import io

    assert raw.json["sha256"] == hashlib.sha256(data).hexdigest()
    with open(os.path.join(storage_root, raw.json["path"]), "rb") as fh:
        assert fh.read() == data
    multi = client.post(
        "/api/v1/files",
        headers=user_key["headers"],
        data={"file": (io.BytesIO(data), "clip name.mp4")},
        content_type="multipart/form-data",
    )
    assert multi.status_code == 201 and multi.json["path"].endswith("/clip_name.mp4")


def test_oversized_upload_is_413_and_nothing_stored(make_settings, make_key, storage_root):
    from ffmpeg_api.api import create_app

    s = make_settings(max_upload_bytes=1000)
    client = create_app(s).test_client()
    key = make_key()
    before = sorted(os.listdir(os.path.join(storage_root, "uploads")))
    r = client.post(
        "/api/v1/files?name=big.bin",
        headers=key["headers"],
        data=b"x" * 5000,
        content_type="application/octet-stream",
    )
    assert r.status_code == 413 and r.json["error"]["code"] == "payload_too_large"
    assert sorted(os.listdir(os.path.join(storage_root, "uploads"))) == before
    assert not [n for n in os.listdir(os.path.join(storage_root, "tmp")) if n.endswith(".part")]


def test_input_over_the_duration_limit_is_refused(make_settings, make_key, clips, db_conn):
    from ffmpeg_api.api import create_app

    client = create_app(make_settings(max_input_duration=1.0)).test_client()
    key = make_key()
    r = client.post(
        "/api/v1/convert",
        headers=key["headers"],
        json={"input": clips["short.mp4"], "operations": [{"type": "transcode"}]},
    )
    assert r.status_code == 422 and r.json["error"]["code"] == "input_rejected"
    assert _count_jobs(db_conn) == 0


def test_gpu_requested_without_gpu_fails_fast(client, user_key, clips, db_conn):
    r = client.post(
        "/api/v1/convert",
        headers=user_key["headers"],
        json={
            "input": clips["short.mp4"],
            "hardware": "gpu",
            "operations": [{"type": "transcode"}],
        },
    )
    assert r.status_code == 422 and r.json["error"]["code"] == "gpu_unavailable"
    assert _count_jobs(db_conn) == 0


def test_webhook_to_internal_address_refused_unless_allowed(make_settings, make_key, clips):
    from ffmpeg_api.api import create_app

    client = create_app(make_settings(webhook_allow_private=False)).test_client()
    key = make_key()
    r = client.post(
        "/api/v1/convert",
        headers=key["headers"],
        json={
            "input": clips["short.mp4"],
            "operations": [{"type": "transcode"}],
            "webhook_url": "http://127.0.0.1:9/hook",
        },
    )
    assert r.status_code == 422 and r.json["error"]["field"] == "webhook_url"
    assert "internal" in r.json["error"]["message"]


def test_submit_creates_row_then_queue_entry(client, user_key, clips, settings, db_conn):
    r = client.post(
        "/api/v1/convert",
        headers=user_key["headers"],
        json={
            "input": clips["short.mp4"],
            "priority": "high",
            "operations": [{"type": "transcode", "video_codec": "h264"}],
        },
    )
    assert r.status_code == 202
    job = r.json
    assert job["status"] == "queued" and job["queue"] == "high"
    assert r.headers["Location"] == f"/api/v1/jobs/{job['id']}"
    assert job["links"]["logs"].endswith("/logs")
    conn = redis.Redis.from_url(settings.redis_url)
    assert conn.lrange("rq:queue:high", 0, -1) == [f"{job['id']}_0".encode()]
    row = db_conn.execute("SELECT * FROM jobs WHERE id = %s", (job["id"],)).fetchone()
    assert row["api_key_id"] == user_key["id"] and row["user_id"] == "alice"
    got = client.get(f"/api/v1/jobs/{job['id']}", headers=user_key["headers"])
    assert got.json["status"] == "queued"
    listed = client.get("/api/v1/jobs?status=queued", headers=user_key["headers"]).json
    assert listed["total"] == 1 and listed["jobs"][0]["id"] == job["id"]


def test_users_cannot_see_each_others_jobs(client, user_key, make_key, clips):
    r = client.post(
        "/api/v1/convert",
        headers=user_key["headers"],
        json={"input": clips["short.mp4"], "operations": [{"type": "transcode"}]},
    )
    other = make_key(user="mallory")
    assert client.get(f"/api/v1/jobs/{r.json['id']}", headers=other["headers"]).status_code == 404
    assert client.get("/api/v1/jobs", headers=other["headers"]).json["total"] == 0


def test_cancel_queued_job_removes_queue_entry(client, user_key, clips, settings):
    r = client.post(
        "/api/v1/convert",
        headers=user_key["headers"],
        json={"input": clips["short.mp4"], "operations": [{"type": "transcode"}]},
    )
    job_id = r.json["id"]
    c = client.delete(f"/api/v1/jobs/{job_id}", headers=user_key["headers"])
    assert c.status_code == 200 and c.json["status"] == "cancelled" and c.json["changed"]
    assert redis.Redis.from_url(settings.redis_url).llen("rq:queue:default") == 0
    again = client.delete(f"/api/v1/jobs/{job_id}", headers=user_key["headers"])
    assert again.json["changed"] is False


def test_access_log_has_key_id_never_key(client, user_key, settings):
    client.get("/api/v1/jobs", headers={**user_key["headers"], "X-Request-ID": "req-123"})
    with open(settings.access_log) as fh:
        lines = [json.loads(line) for line in fh if "req-123" in line]
    assert lines, "no access line for the request"
    line = lines[-1]
    assert line["key_id"] == user_key["id"] and line["route"] == "/api/v1/jobs"
    assert line["status"] == 200 and line["client_ip"] == "127.0.0.1"
    with open(settings.access_log) as fh:
        assert user_key["raw"] not in fh.read()


def test_monitored_key_is_flagged_in_access_log(client, user_key, admin_key, settings):
    r = client.post(
        f"/api/v1/admin/keys/{user_key['id']}/monitor",
        headers=admin_key["headers"],
        json={"enabled": True},
    )
    assert r.json["changed"] is True
    client.get("/api/v1/jobs", headers={**user_key["headers"], "X-Request-ID": "mon-1"})
    with open(settings.access_log) as fh:
        line = next(json.loads(x) for x in fh if "mon-1" in x)
    assert line["monitored"] is True


def test_openapi_documents_exactly_the_routes(app, client):
    spec = client.get("/api/v1/openapi.json").json
    documented = {
        (path, method.upper()) for path, methods in spec["paths"].items() for method in methods
    }
    actual = set()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/") or rule.endpoint == "static":
            continue
        path = rule.rule.removeprefix("/api/v1").replace("<", "{").replace(">", "}")
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            actual.add((path, method))
    assert documented == actual
    page = client.get("/docs")
    assert page.status_code == 200 and b"/api/v1/convert" in page.data


def test_metrics_expose_http_and_job_families(client, user_key):
    client.get("/api/v1/jobs", headers=user_key["headers"])
    text = client.get("/metrics").data.decode()
    for family in (
        "http_requests_total",
        "http_request_duration_seconds_bucket",
        "ffmpeg_queue_depth",
        "ffmpeg_workers",
        "api_key_usage_total",
        "ffmpeg_jobs_in_state",
    ):
        assert family in text, family
    assert 'route="/api/v1/jobs"' in text


def test_revocation_reaches_every_cached_principal_at_once(client, user_key, settings):
    import subprocess
    import sys

    from helpers import env_for

    assert client.get("/api/v1/jobs", headers=user_key["headers"]).status_code == 200  # cached
    subprocess.run(
        [sys.executable, "-m", "ffmpeg_api.cli", "keys", "revoke", user_key["id"]],
        env=env_for(settings),
        check=True,
        capture_output=True,
    )
    assert client.get("/api/v1/jobs", headers=user_key["headers"]).status_code == 401
    # Redis losing its data must not resurrect a cached principal.
    redis.Redis.from_url(settings.redis_url).flushdb()
    assert client.get("/api/v1/jobs", headers=user_key["headers"]).status_code == 401


def test_usage_is_counted_without_database_writes_and_folded_in(
    client, user_key, admin_key, db_conn
):
    for _ in range(5):
        client.get("/api/v1/jobs", headers=user_key["headers"])
    usage = client.get(
        f"/api/v1/admin/keys/{user_key['id']}/usage", headers=admin_key["headers"]
    ).json
    assert usage["request_count"] == 5
    db_conn.rollback()
    row = db_conn.execute(
        "SELECT request_count FROM api_keys WHERE id = %s", (user_key["id"],)
    ).fetchone()
    assert row["request_count"] == 5


def test_requests_survive_the_database_dropping_every_connection(client, user_key, settings):
    """A PostgreSQL restart (restore, PITR, config change) kills the pooled connections: the
    pool checks a connection before lending it, so the next request reconnects instead of
    failing."""
    for _ in range(3):
        assert client.get("/api/v1/jobs", headers=user_key["headers"]).status_code == 200
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        killed = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()[0]
    assert killed >= 1
    for _ in range(3):
        assert client.get("/api/v1/jobs", headers=user_key["headers"]).status_code == 200


def _observed(histogram, **labels) -> tuple[float, float]:
    """(count, sum) of a histogram (of its labelled child when labels are given)."""
    count = total = 0.0
    for metric in histogram.collect():
        for sample in metric.samples:
            if any(sample.labels.get(k) != v for k, v in labels.items()):
                continue
            if sample.name.endswith("_count"):
                count += sample.value
            elif sample.name.endswith("_sum"):
                total += sample.value
    return count, total


def test_latency_counts_the_wait_behind_the_load_balancer_from_trusted_proxies_only(client):
    """A saturated API makes requests wait before a process takes them; HAProxy's
    X-Request-Start lets the latency histogram (HighLatencyP95) see that wait."""
    import time

    from ffmpeg_api.metrics import HTTP_DURATION, HTTP_QUEUE

    labels = {"method": "GET", "route": "/api/v1/health/live", "status": "200"}
    waited = {"X-Request-Start": f"t={int((time.time() - 2.0) * 1000)}"}

    q0, d0 = _observed(HTTP_QUEUE), _observed(HTTP_DURATION, **labels)
    assert client.get("/api/v1/health/live", headers=waited).status_code == 200
    q1, d1 = _observed(HTTP_QUEUE), _observed(HTTP_DURATION, **labels)
    assert q1[0] == q0[0] + 1 and 1.9 < q1[1] - q0[1] < 5, (q0, q1)
    assert d1[0] == d0[0] + 1 and d1[1] - d0[1] >= q1[1] - q0[1], (d0, d1)

    # From a peer that is not a trusted proxy the header is anybody's claim: ignored.
    r = client.get(
        "/api/v1/health/live", headers=waited, environ_base={"REMOTE_ADDR": "203.0.113.9"}
    )
    assert r.status_code == 200
    q2, d2 = _observed(HTTP_QUEUE), _observed(HTTP_DURATION, **labels)
    assert q2[0] == q1[0] + 1 and q2[1] - q1[1] == 0, (q1, q2)
    assert d2[1] - d1[1] < 1.0, (d1, d2)
