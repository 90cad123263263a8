"""What a caller without credentials learns (issue 14 item 9), through a real gunicorn:
/health gives them the status alone, operators (an API key, METRICS_TOKEN) the components;
a job's logs and error name files relative to the storage root, never by server paths."""

import os
import stat

import requests
from helpers import job_row, wait_for

TOKEN = "health-scrape-token"
COMPONENTS = {"database", "redis", "queues", "workers", "storage", "ffmpeg", "maintenance"}


def _health(url, headers=None):
    r = requests.get(f"{url}/api/v1/health", headers=headers or {}, timeout=30)
    return r.status_code, r.json()


def test_health_without_credentials_is_the_status_alone(start_api, settings):
    url = start_api(settings, workers=1)
    status, body = _health(url)
    # No worker runs here: degraded, and still 200 as before.
    assert (status, body) == (200, {"status": "degraded"})
    live = requests.get(f"{url}/api/v1/health/live", timeout=10)
    assert live.status_code == 200 and live.json() == {"status": "alive"}


def test_health_details_need_an_api_key_or_the_metrics_token(
    make_settings, start_api, user_key, admin_key
):
    url = start_api(make_settings(metrics_token=TOKEN), workers=1)
    for headers in (
        user_key["headers"],
        admin_key["headers"],
        {"Authorization": f"Bearer {user_key['raw']}"},
        {"Authorization": f"Bearer {TOKEN}"},
    ):
        status, body = _health(url, headers)
        assert status == 200 and body["status"] == "degraded", body
        assert set(body["components"]) == COMPONENTS, body
        assert body["components"]["workers"]["cpu"]["alive"] == 0
    forged = user_key["raw"][:-4] + ("AAAA" if not user_key["raw"].endswith("AAAA") else "BBBB")
    for headers in (
        {"Authorization": "Bearer wrong-token"},
        {"X-API-Key": forged},
        {"X-API-Key": "not-a-key"},
    ):
        assert _health(url, headers) == (200, {"status": "degraded"}), headers


def test_revoked_key_sees_the_status_alone(start_api, settings, user_key, db_conn):
    url = start_api(settings, workers=1)
    assert "components" in _health(url, user_key["headers"])[1]
    db_conn.execute("UPDATE api_keys SET revoked_at = now() WHERE id = %s", (user_key["id"],))
    db_conn.commit()
    assert _health(url, user_key["headers"]) == (200, {"status": "degraded"})


def test_health_without_a_database_keeps_its_503(make_settings, start_api):
    broken = make_settings(database_url="postgresql://nobody@127.0.0.1:1/none", metrics_token=TOKEN)
    url = start_api(broken, workers=1)
    assert _health(url) == (503, {"status": "unhealthy"})
    status, body = _health(url, {"Authorization": f"Bearer {TOKEN}"})
    assert status == 503 and body["components"]["database"]["status"] == "error"


def _fake_ffmpeg(tmp_path) -> str:
    """An ffmpeg that fails the way a real one does: it names its input and output files by
    the absolute paths the worker gave it."""
    path = tmp_path / "ffmpeg"
    path.write_text(
        "#!/bin/sh\n"
        'for arg in "$@"; do echo "argument: $arg" >&2; done\n'
        "eval last=\\${$#}\n"
        'echo "[error] $last: Permission denied" >&2\n'
        "exit 1\n"
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_job_logs_and_error_hide_the_storage_root(
    make_settings, start_api, start_worker, user_key, clips, tmp_path
):
    settings = make_settings()
    url = start_api(settings, workers=1)
    start_worker(make_settings(ffmpeg_bin=_fake_ffmpeg(tmp_path)))
    r = requests.post(
        f"{url}/api/v1/convert",
        headers=user_key["headers"],
        json={
            "input": clips["short.mp4"],
            "output": "mp4",
            "operations": [{"type": "transcode", "video_codec": "h264", "preset": "ultrafast"}],
        },
        timeout=30,
    )
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]

    def finished():
        job = requests.get(f"{url}/api/v1/jobs/{job_id}", headers=user_key["headers"]).json()
        return job if job["status"] in ("completed", "failed", "cancelled") else None

    job = wait_for(finished, timeout=90, interval=0.3, what="the job to fail")
    logs = requests.get(f"{url}/api/v1/jobs/{job_id}/logs", headers=user_key["headers"]).json()
    roots = {settings.storage_root.rstrip("/"), os.path.realpath(settings.storage_root)}

    assert job["status"] == "failed", job
    assert "Permission denied" in job["error"] and "Permission denied" in logs["logs"]
    for text in (job["error"], logs["logs"]):
        assert not any(root in text for root in roots), text
    # The files are still named, as a client names them: relative to the storage root.
    assert f"argument: file:{clips['short.mp4']}" in logs["logs"], logs["logs"]
    assert f"argument: file:tmp/{job_id}.0/" in logs["logs"], logs["logs"]
    assert f"tmp/{job_id}.0/" in job["error"], job["error"]
    # Stored that way, so webhooks and every other reader get the same text.
    row = job_row(settings, job_id)
    assert not any(root in (row["logs"] or "") + (row["error"] or "") for root in roots), row
