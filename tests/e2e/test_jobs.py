"""Jobs end to end: the API accepts, a real RQ worker process runs real ffmpeg, outputs are
checked with ffprobe. Faults (cancel, SIGKILL, Redis data loss) are injected for real."""

import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import redis
from helpers import env_for, job_row, parent, submit, wait_for


def ffprobe(path):
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams", path],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def stream(info, kind):
    return next(s for s in info["streams"] if s["codec_type"] == kind)


def wait_status(client, key, job_id, statuses=("completed", "failed", "cancelled"), timeout=90):
    def done():
        job = client.get(f"/api/v1/jobs/{job_id}", headers=key["headers"]).json
        return job if job["status"] in statuses else None

    return wait_for(done, timeout=timeout, interval=0.2, what=f"job {job_id} in {statuses}")


def output_file(settings, job, name=None):
    rel = (
        job["output_path"]
        if name is None
        else next(o for o in job["outputs"] if o.endswith("/" + name))
    )
    return os.path.join(settings.storage_root, rel)


def test_every_operation_end_to_end(client, user_key, clips, settings, start_worker):
    worker = start_worker(settings)
    short = clips["short.mp4"]
    jobs = {
        "h264": submit(
            client,
            user_key,
            {
                "input": short,
                "output": "mp4",
                "operations": [
                    {"type": "trim", "start": 0.5, "duration": 1.5},
                    {
                        "type": "transcode",
                        "video_codec": "h264",
                        "crf": 28,
                        "preset": "ultrafast",
                        "width": 160,
                        "height": 120,
                        "fps": 15,
                        "audio_codec": "aac",
                        "audio_bitrate": "64k",
                    },
                ],
            },
        ),
        "h265": submit(
            client,
            user_key,
            {
                "input": short,
                "output": "mkv",
                "operations": [
                    {"type": "trim", "start": 0, "end": 1},
                    {
                        "type": "transcode",
                        "video_codec": "h265",
                        "video_bitrate": "300k",
                        "preset": "ultrafast",
                    },
                ],
            },
        ),
        "vp9": submit(
            client,
            user_key,
            {
                "input": short,
                "output": "webm",
                "operations": [
                    {"type": "trim", "start": 0, "duration": 1},
                    {
                        "type": "transcode",
                        "video_codec": "vp9",
                        "crf": 40,
                        "preset": "realtime",
                        "audio_codec": "opus",
                    },
                ],
            },
        ),
        "av1": submit(
            client,
            user_key,
            {
                "input": short,
                "output": "mkv",
                "operations": [
                    {"type": "trim", "start": 0, "duration": 1},
                    {
                        "type": "transcode",
                        "video_codec": "av1",
                        "crf": 50,
                        "preset": 12,
                        "width": 160,
                    },
                ],
            },
        ),
        "thumbs": submit(
            client,
            user_key,
            {
                "input": short,
                "output": "mp4",
                "operations": [{"type": "thumbnail", "count": 3, "width": 80, "format": "jpg"}],
            },
        ),
        "hls": submit(
            client,
            user_key,
            {
                "input": short,
                "output": "m3u8",
                "operations": [
                    {
                        "type": "hls",
                        "segment_duration": 2,
                        "ladder": [
                            {"height": 120, "video_bitrate": "200k"},
                            {"height": 240, "video_bitrate": "400k"},
                        ],
                    }
                ],
            },
        ),
        "audio": submit(
            client,
            user_key,
            {
                "input": short,
                "output": "mp3",
                "operations": [{"type": "extract_audio", "codec": "mp3", "bitrate": "64k"}],
            },
        ),
        "analyze": submit(
            client,
            user_key,
            {
                "input": short,
                "output": "mp4",
                "operations": [
                    {"type": "analyze", "reference": short, "metrics": ["psnr", "ssim"]}
                ],
            },
        ),
    }
    done = {name: wait_status(client, user_key, jid, timeout=180) for name, jid in jobs.items()}
    for name, job in done.items():
        assert job["status"] == "completed", (name, job["error"], worker.log()[-2000:])
        assert job["progress"] == 100 and job["output_size"] > 0

    info = ffprobe(output_file(settings, done["h264"]))
    v = stream(info, "video")
    assert v["codec_name"] == "h264" and (v["width"], v["height"]) == (160, 120)
    assert v["r_frame_rate"] == "15/1"
    assert stream(info, "audio")["codec_name"] == "aac"
    assert abs(float(info["format"]["duration"]) - 1.5) < 0.25

    assert stream(ffprobe(output_file(settings, done["h265"])), "video")["codec_name"] == "hevc"
    vp9 = ffprobe(output_file(settings, done["vp9"]))
    assert stream(vp9, "video")["codec_name"] == "vp9"
    assert stream(vp9, "audio")["codec_name"] == "opus"
    av1 = stream(ffprobe(output_file(settings, done["av1"])), "video")
    assert av1["codec_name"] == "av1" and av1["width"] == 160

    thumbs = [o for o in done["thumbs"]["outputs"] if o.endswith(".jpg")]
    assert len(thumbs) == 3
    t = stream(ffprobe(os.path.join(settings.storage_root, thumbs[0])), "video")
    assert t["width"] == 80

    hls = done["hls"]
    master = output_file(settings, hls)
    assert master.endswith("master.m3u8")
    with open(master) as fh:
        text = fh.read()
    assert text.count("#EXT-X-STREAM-INF") == 2
    assert sum(o.endswith(".ts") or o.endswith(".m4s") for o in hls["outputs"]) >= 2

    audio = ffprobe(output_file(settings, done["audio"]))
    assert [s["codec_type"] for s in audio["streams"]] == ["audio"]
    assert audio["streams"][0]["codec_name"] == "mp3"

    result = done["analyze"]["result"]
    assert json.dumps(result)  # stored as JSON on the job
    flat = json.dumps(result)
    assert "ssim" in flat and "psnr" in flat and "duration" in flat


def test_output_download_honours_range_and_logs_are_real(
    client, user_key, clips, settings, start_worker
):
    start_worker(settings)
    job_id = submit(
        client,
        user_key,
        {
            "input": clips["short.mp4"],
            "operations": [{"type": "transcode", "video_codec": "h264", "preset": "ultrafast"}],
        },
    )
    job = wait_status(client, user_key, job_id)
    assert job["status"] == "completed"
    whole = client.get(f"/api/v1/jobs/{job_id}/output", headers=user_key["headers"])
    assert whole.status_code == 200
    with open(output_file(settings, job), "rb") as fh:
        data = fh.read()
    assert whole.data == data
    part = client.get(
        f"/api/v1/jobs/{job_id}/output", headers={**user_key["headers"], "Range": "bytes=10-19"}
    )
    assert part.status_code == 206 and part.data == data[10:20]
    logs = client.get(f"/api/v1/jobs/{job_id}/logs", headers=user_key["headers"]).json
    assert logs["logs"].strip(), "ffmpeg stderr tail is empty"


def _ffmpeg_pids(worker):
    """The ffmpeg processes below this test's worker (not the machine's: the fleet's and the
    deployed stack's ffmpeg run beside the e2e layer in CI, and /proc shows them too)."""
    pids = []
    for pid in worker.descendants():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
        except OSError:
            continue
        if argv and os.path.basename(argv[0]) == b"ffmpeg":
            pids.append(pid)
    return pids


SLOW = {"type": "transcode", "video_codec": "h264", "preset": "veryslow", "crf": 18}


def _wait_processing(client, key, job_id):
    def running():
        job = client.get(f"/api/v1/jobs/{job_id}", headers=key["headers"]).json
        return job if job["status"] == "processing" and job["progress"] > 0 else None

    return wait_for(running, timeout=30, interval=0.1, what="job making progress")


def test_cancel_stops_running_ffmpeg_within_two_seconds(
    client, user_key, clips, settings, start_worker
):
    worker = start_worker(settings)
    job_id = submit(client, user_key, {"input": clips["long.mp4"], "operations": [SLOW]})
    job = _wait_processing(client, user_key, job_id)
    assert 0 < job["progress"] < 100 and job["stage"]
    assert _ffmpeg_pids(worker), "ffmpeg should be running"
    t0 = time.monotonic()
    r = client.delete(f"/api/v1/jobs/{job_id}", headers=user_key["headers"])
    assert r.json["status"] == "cancelled"
    wait_for(lambda: not _ffmpeg_pids(worker), timeout=2.0, interval=0.05, what="ffmpeg to stop")
    assert time.monotonic() - t0 <= 2.0
    time.sleep(0.5)
    final = client.get(f"/api/v1/jobs/{job_id}", headers=user_key["headers"]).json
    assert final["status"] == "cancelled" and final["output_path"] is None
    assert not os.path.exists(os.path.join(settings.output_dir, job_id))


def test_sigkill_of_whole_worker_requeues_and_completes(
    client, user_key, clips, settings, start_worker
):
    first = start_worker(settings, name="doomed")
    job_id = submit(
        client,
        user_key,
        {
            "input": clips["long.mp4"],
            "operations": [
                {"type": "trim", "start": 0, "duration": 12},
                {"type": "transcode", "video_codec": "h264", "preset": "veryslow"},
            ],
        },
    )
    _wait_processing(client, user_key, job_id)
    victims = [first.pid, *first.descendants()]
    for pid in victims:  # the machine "dies": worker, work horse and ffmpeg at once
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    first.popen.wait(5)
    assert job_row(settings, job_id)["status"] == "processing"  # nobody knows yet
    # A process manager restarts it under the same name at once: its stale registration in
    # Redis must not stop it.
    start_worker(settings, name="doomed")
    job = wait_status(client, user_key, job_id, timeout=120)
    assert job["status"] == "completed", job["error"]
    assert job["retry_count"] == 1 and job["worker_id"] == "doomed"
    info = ffprobe(output_file(settings, job))
    assert abs(float(info["format"]["duration"]) - 12) < 0.5


def test_sigkill_of_work_horse_is_requeued_by_its_worker(
    client, user_key, clips, settings, start_worker
):
    worker = start_worker(settings, name="survivor")
    job_id = submit(
        client,
        user_key,
        {
            "input": clips["long.mp4"],
            "operations": [
                {"type": "trim", "start": 0, "duration": 10},
                {"type": "transcode", "video_codec": "h264", "preset": "veryslow"},
            ],
        },
    )
    _wait_processing(client, user_key, job_id)
    ffmpeg = next(iter(_ffmpeg_pids(worker)))
    horse = parent(ffmpeg)
    assert horse != worker.pid
    os.kill(horse, signal.SIGKILL)  # the OOM killer's favourite target
    job = wait_status(client, user_key, job_id, timeout=120)
    assert job["status"] == "completed", job["error"]
    assert job["retry_count"] == 1


def test_redis_data_loss_then_reconcile_requeues(client, user_key, clips, settings, start_worker):
    ids = [
        submit(
            client,
            user_key,
            {"input": clips["short.mp4"], "operations": [{"type": "thumbnail", "count": 1}]},
        )
        for _ in range(3)
    ]
    redis.Redis.from_url(settings.redis_url).flushall()
    cli = [sys.executable, "-m", "ffmpeg_api.cli", "jobs", "reconcile", "--json"]
    preview = subprocess.run(
        [*cli, "--dry-run"], env=env_for(settings), capture_output=True, text=True, check=True
    )
    assert sorted(json.loads(preview.stdout)["requeued"]) == sorted(ids)
    assert redis.Redis.from_url(settings.redis_url).llen("rq:queue:default") == 0
    run = subprocess.run(cli, env=env_for(settings), capture_output=True, text=True, check=True)
    assert json.loads(run.stdout)["changed"] is True
    again = subprocess.run(cli, env=env_for(settings), capture_output=True, text=True, check=True)
    assert json.loads(again.stdout)["changed"] is False  # idempotent
    start_worker(settings)
    for job_id in ids:
        assert wait_status(client, user_key, job_id)["status"] == "completed"


class Hook(BaseHTTPRequestHandler):
    received: list = []
    fail_first = 0

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if Hook.fail_first > 0:
            Hook.fail_first -= 1
            self.send_response(500)
            self.end_headers()
            return
        Hook.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_webhook_is_signed_and_retried(client, user_key, clips, settings, start_worker):
    server = HTTPServer(("127.0.0.1", 0), Hook)
    Hook.received, Hook.fail_first = [], 1
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        start_worker(settings)
        url = f"http://127.0.0.1:{server.server_port}/hook"
        job_id = submit(
            client,
            user_key,
            {
                "input": clips["short.mp4"],
                "webhook_url": url,
                "operations": [{"type": "thumbnail", "count": 1}],
            },
        )
        wait_status(client, user_key, job_id)
        wait_for(lambda: Hook.received, timeout=30, what="webhook delivery")
        headers, body = Hook.received[0]
        ts = headers["x-ffmpeg-api-timestamp"]
        expected = (
            "sha256="
            + hmac.new(
                settings.webhook_secret.encode(), ts.encode() + b"." + body, hashlib.sha256
            ).hexdigest()
        )
        assert hmac.compare_digest(headers["x-ffmpeg-api-signature"], expected)
        assert headers["x-ffmpeg-api-attempt"] == "2"  # the first attempt got a 500
        payload = json.loads(body)
        assert payload["event"] == "job.completed" and payload["job"]["id"] == job_id
    finally:
        server.shutdown()


def test_input_corrupted_after_submission_fails_with_reason(
    client, user_key, settings, start_worker, storage_root, clips
):
    with open(os.path.join(storage_root, clips["short.mp4"]), "rb") as src:
        data = src.read()
    # Uploaded by the user: a file put under the root by hand would be usable by admin keys only.
    doomed = client.post(
        "/api/v1/files?name=doomed.mp4", headers=user_key["headers"], data=data
    ).json["path"]
    path = os.path.join(storage_root, doomed)
    job_id = submit(
        client,
        user_key,
        {"input": doomed, "operations": [{"type": "transcode", "height": 120}]},
    )
    with open(path, "wb") as fh:  # the disk "rots" before a worker picks the job up
        fh.write(os.urandom(4096))
    start_worker(settings)
    job = wait_status(client, user_key, job_id)
    assert job["status"] == "failed"
    assert "InputRejected" in job["error"] and storage_root not in job["error"]
    assert job["completed_at"] and job["output_path"] is None
    assert not os.path.exists(os.path.join(settings.output_dir, job_id))


def test_audio_only_input_cannot_be_thumbnailed(client, user_key, storage_root, db_conn):
    path = os.path.join(storage_root, "tmp", "tone.wav")
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "sine=duration=1", path], check=True
    )
    with open(path, "rb") as fh:
        tone = client.post(
            "/api/v1/files?name=tone.wav", headers=user_key["headers"], data=fh.read()
        ).json["path"]
    r = client.post(
        "/api/v1/convert",
        headers=user_key["headers"],
        json={"input": tone, "operations": [{"type": "thumbnail", "count": 1}]},
    )
    assert r.status_code == 422 and "video" in r.json["error"]["message"]
    assert db_conn.execute("SELECT count(*) AS n FROM jobs").fetchone()["n"] == 0


def test_stats_and_metrics_after_jobs(
    client, user_key, admin_key, clips, settings, start_worker, start_api
):
    import requests

    start_worker(settings)
    for _ in range(2):
        wait_status(
            client,
            user_key,
            submit(
                client,
                user_key,
                {"input": clips["short.mp4"], "operations": [{"type": "thumbnail", "count": 1}]},
            ),
        )
    stats = client.get("/api/v1/admin/stats", headers=admin_key["headers"]).json
    thumb = next(r for r in stats["by_operation"] if r["operation"] == "thumbnail")
    assert thumb["count"] == 2 and thumb["completed"] == 2 and thumb["p95_seconds"] > 0
    assert stats["by_status"]["completed"] == 2

    base = start_api(settings, workers=2)
    for _ in range(20):
        assert requests.get(base + "/api/v1/jobs", headers=user_key["headers"]).ok
    text = requests.get(base + "/metrics").text
    jobs_line = next(
        line
        for line in text.splitlines()
        if line.startswith('ffmpeg_jobs_total{operation="thumbnail",status="completed"}')
    )
    assert float(jobs_line.split()[-1]) == 2
    count = next(
        line
        for line in text.splitlines()
        if line.startswith('http_requests_total{method="GET",route="/api/v1/jobs",status="200"}')
    )
    # 20 requests spread over two gunicorn processes, all counted
    assert float(count.split()[-1]) == 20
    assert 'ffmpeg_job_duration_seconds_count{operation="thumbnail"} 2.0' in text
    assert 'ffmpeg_workers{kind="cpu",state="idle"} 1.0' in text


def test_idle_worker_keeps_listening(settings, start_worker):
    """An idle worker's blocking dequeue outlasts the ordinary client socket timeout (10 s);
    it must keep waiting, not quit and be restarted by its process manager."""
    worker = start_worker(settings, name="idler")
    time.sleep(25)
    assert worker.popen.poll() is None, worker.log()[-2000:]
    assert "quitting" not in worker.log()
