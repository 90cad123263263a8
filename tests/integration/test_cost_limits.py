"""Cost limits (issue 14, item 4) through the API, against real PostgreSQL and Redis: the output
pixel-rate cap at submission, the per-key and per-user quotas on active jobs, the daily quota
on encoded output-seconds, and the planned timeout stored on the row and given to RQ."""

from __future__ import annotations

import subprocess
import threading

import pytest
import redis

from ffmpeg_api.api import create_app


def make_clip(tmp_path, name, source, seconds, *, audio=True):
    path = tmp_path / name
    args = ["-f", "lavfi", "-i", f"{source}:d={seconds}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=d={seconds}", "-c:a", "aac", "-shortest"]
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", *args, "-c:v", "libx264", "-preset", "ultrafast",
         "-pix_fmt", "yuv420p", str(path)],
        check=True,
    )  # fmt: skip
    return path


def upload(client, key, path):
    r = client.post(
        f"/api/v1/files?name={path.name}", headers=key["headers"], data=path.read_bytes()
    )
    assert r.status_code == 201, r.json
    return r.json["path"]


def convert(client, key, body):
    return client.post("/api/v1/convert", headers=key["headers"], json=body)


def transcode(path, **extra):
    return {"input": path, "output": "mp4", "operations": [{"type": "transcode", **extra}]}


@pytest.fixture
def short(tmp_path):
    return make_clip(tmp_path, "short.mp4", "testsrc2=s=320x240:r=25", 3)


def test_pixel_rate_cap_refuses_4k_at_120_with_the_field(client, user_key, tmp_path):
    uhd = upload(client, user_key, make_clip(tmp_path, "uhd.mp4", "color=s=4096x2160:r=30", 0.2))
    r = convert(client, user_key, transcode(uhd, fps=120))
    assert r.status_code == 422, r.json
    assert r.json["error"]["field"] == "operations[0].fps"
    assert "pixels per second" in r.json["error"]["message"]
    assert convert(client, user_key, transcode(uhd, fps=30)).status_code == 202
    assert convert(client, user_key, transcode(uhd)).status_code == 202  # keeps its 30 fps

    # the input's probed fps counts when the request sets none
    fast = upload(client, user_key, make_clip(tmp_path, "fast.mkv", "color=s=4096x2160:r=120", 0.1))
    r = convert(client, user_key, transcode(fast))
    assert r.status_code == 422 and r.json["error"]["field"] == "operations[0].fps"
    hls = {
        "input": fast,
        "output": "m3u8",
        "operations": [{"type": "hls", "ladder": [{"height": 2160, "video_bitrate": "20M"}]}],
    }
    r = convert(client, user_key, hls)
    assert r.status_code == 422 and r.json["error"]["field"] == "operations[0].ladder[0].height"


def test_active_jobs_per_key(make_settings, make_key, short):
    client = create_app(make_settings(max_active_jobs_per_key=2)).test_client()
    first, second = make_key(user="alice", name="a"), make_key(user="alice", name="b")
    path = upload(client, first, short)
    ids = [convert(client, first, transcode(path)).json["id"] for _ in range(2)]
    r = convert(client, first, transcode(path))
    assert r.status_code == 429, r.json
    assert r.json["error"]["code"] == "too_many_active_jobs"
    assert "MAX_ACTIVE_JOBS_PER_KEY" in r.json["error"]["message"]
    assert convert(client, second, transcode(path)).status_code == 202  # another key of alice
    client.delete(f"/api/v1/jobs/{ids[0]}", headers=first["headers"])
    assert convert(client, first, transcode(path)).status_code == 202  # a cancelled one frees


def test_active_jobs_per_user_over_all_keys(make_settings, make_key, admin_key, short, db_conn):
    client = create_app(make_settings(max_active_jobs_per_user=2)).test_client()
    first, second = make_key(user="alice", name="a"), make_key(user="alice", name="b")
    path = upload(client, first, short)
    assert convert(client, first, transcode(path)).status_code == 202
    assert convert(client, second, transcode(path)).status_code == 202
    r = convert(client, second, transcode(path))
    assert r.status_code == 429 and r.json["error"]["code"] == "too_many_active_jobs"
    assert "MAX_ACTIVE_JOBS_PER_USER" in r.json["error"]["message"]
    # other users and admin keys are not counted against alice's
    bob = make_key(user="bob", name="bob")
    assert convert(client, bob, transcode(upload(client, bob, short))).status_code == 202
    assert convert(client, admin_key, transcode(path)).status_code == 202
    # a finished job is no longer active
    db_conn.execute("UPDATE jobs SET status = 'completed' WHERE user_id = 'alice'")
    db_conn.commit()
    assert convert(client, first, transcode(path)).status_code == 202


def test_output_seconds_per_day(make_settings, user_key, short, db_conn):
    client = create_app(make_settings(output_seconds_per_day=10)).test_client()
    path = upload(client, user_key, short)
    ids = [convert(client, user_key, transcode(path)).json["id"] for _ in range(3)]  # 3 x 3 s
    rows = db_conn.execute("SELECT output_seconds FROM jobs WHERE id = ANY(%s::uuid[])", (ids,))
    assert [r["output_seconds"] for r in rows] == [pytest.approx(3.0)] * 3
    r = convert(client, user_key, transcode(path))
    assert r.status_code == 429, r.json
    assert r.json["error"]["code"] == "output_quota_exceeded"
    # the oldest job leaves the 24 h window first: that frees the 2 s needed
    assert 86000 < int(r.headers["Retry-After"]) <= 86400
    # a trimmed job fits in what is left, a thumbnail counts nothing
    trimmed = {"input": path, "operations": [{"type": "trim", "duration": 1}]}
    assert convert(client, user_key, trimmed).status_code == 202
    thumb = {"input": path, "output": "jpg", "operations": [{"type": "thumbnail", "count": 1}]}
    assert convert(client, user_key, thumb).status_code == 202
    # a job cancelled before it started gives its seconds back
    client.delete(f"/api/v1/jobs/{ids[0]}", headers=user_key["headers"])
    assert convert(client, user_key, transcode(path)).status_code == 202
    # one job bigger than the whole day: waiting would not help, so 422 without Retry-After
    ladder = [{"height": h, "video_bitrate": "300k"} for h in (240, 180, 144, 120)]
    r = convert(client, user_key, {"input": path, "output": "m3u8",
                                   "operations": [{"type": "hls", "ladder": ladder}]})  # fmt: skip
    assert r.status_code == 422 and r.json["error"]["code"] == "output_quota_exceeded"
    assert "Retry-After" not in r.headers


def test_planned_timeout_is_stored_and_given_to_rq(client, user_key, settings, short, db_conn):
    path = upload(client, user_key, short)
    body = {
        "input": path,
        "operations": [{"type": "trim", "duration": 1}, {"type": "transcode", "height": 120}],
    }
    job_id = convert(client, user_key, body).json["id"]
    row = db_conn.execute(
        "SELECT timeout_seconds, rq_job_id, input_duration FROM jobs WHERE id = %s", (job_id,)
    ).fetchone()
    old_rule = (settings.job_timeout_base + settings.job_timeout_factor * 3.0) * 2
    assert settings.job_timeout_base < row["timeout_seconds"] < old_rule
    rq_timeout = redis.Redis.from_url(settings.redis_url).hget(
        f"rq:job:{row['rq_job_id']}", "timeout"
    )
    assert int(rq_timeout) == int(row["timeout_seconds"]) + 60  # queues.enqueue's margin


def test_concurrent_submissions_cannot_overshoot_the_user_quota(
    make_settings, make_key, short, db_conn
):
    """12 submissions of one user at once, each in its own thread with its own database
    connection, against a limit of 3: the advisory lock lets exactly 3 in."""
    app = create_app(make_settings(max_active_jobs_per_user=3))
    keys = [make_key(user="alice", name=f"k{i}") for i in range(4)]
    path = upload(app.test_client(), keys[0], short)
    barrier = threading.Barrier(12)
    statuses: list[int] = []

    def submit(key):
        client = app.test_client()
        barrier.wait()
        statuses.append(convert(client, key, transcode(path)).status_code)

    threads = [threading.Thread(target=submit, args=(keys[i % 4],)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [202] * 3 + [429] * 9, statuses
    active = db_conn.execute(
        "SELECT count(*) AS n FROM jobs WHERE user_id = 'alice' AND status = 'queued'"
    ).fetchone()["n"]
    assert active == 3
