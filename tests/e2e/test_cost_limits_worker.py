"""The decoder guard (issue 14, item 4) through a real RQ worker running real ffmpeg: a clip
whose first pictures are small and whose later ones are larger than MAX_INPUT_PIXELS passes
the probe at submission, and the job then fails with a clear reason at the first large
picture instead of decoding it."""

from __future__ import annotations

import subprocess

from helpers import wait_for

from ffmpeg_api.api import create_app

LIMIT = 100_000  # 320x240 (76,800) is within it, 1280x720 (921,600) is not


def ts_part(path, size, offset):
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=s={size}:r=25:d=1",
         "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
         "-output_ts_offset", str(offset), "-f", "mpegts", str(path)],
        check=True,
    )  # fmt: skip


def growing_clip(tmp_path):
    """One MPEG-TS stream: 1 s of 320x240, then (a resolution change) 1 s of 1280x720."""
    small, large = tmp_path / "small.ts", tmp_path / "large.ts"
    ts_part(small, "320x240", 0)
    ts_part(large, "1280x720", 1)
    clip = tmp_path / "growing.ts"
    clip.write_bytes(small.read_bytes() + large.read_bytes())
    return clip, small


def upload(client, key, path):
    r = client.post(
        f"/api/v1/files?name={path.name}", headers=key["headers"], data=path.read_bytes()
    )
    assert r.status_code == 201, r.json
    return r.json["path"]


def run_job(client, key, path, operations):
    r = client.post(
        "/api/v1/convert",
        headers=key["headers"],
        json={"input": path, "output": "mp4", "operations": operations},
    )
    assert r.status_code == 202, r.json  # the probed pictures are within the limit
    job_id = r.json["id"]

    def done():
        job = client.get(f"/api/v1/jobs/{job_id}", headers=key["headers"]).json
        return job if job["status"] in ("completed", "failed", "cancelled") else None

    return wait_for(done, timeout=90, interval=0.2, what=f"job {job_id}")


def test_pictures_after_the_probed_ones_cannot_exceed_the_limit(
    make_settings, user_key, start_worker, tmp_path
):
    settings = make_settings(max_input_pixels=LIMIT)
    client = create_app(settings).test_client()
    start_worker(settings)
    clip, small = growing_clip(tmp_path)
    growing, control = upload(client, user_key, clip), upload(client, user_key, small)

    for operations in (
        [{"type": "transcode", "preset": "ultrafast"}],
        [{"type": "hls", "ladder": [{"height": 240, "video_bitrate": "300k"}]}],
    ):
        job = run_job(client, user_key, growing, operations)
        assert job["status"] == "failed", job
        assert job["error"].startswith("PictureTooLarge: the input has a picture of 1280x720")
        assert "MAX_INPUT_PIXELS" in job["error"]
        assert job["outputs"] == [] and job["output_path"] is None  # nothing published
        logs = client.get(f"/api/v1/jobs/{job['id']}/logs", headers=user_key["headers"]).json
        assert "exceeds specified max pixel count" in logs["logs"]

    # the same limit does not stop a clip whose pictures all fit (320 is padded to 384)
    job = run_job(client, user_key, control, [{"type": "transcode", "preset": "ultrafast"}])
    assert job["status"] == "completed", job
