"""End-to-end media tests with the real ffmpeg/ffprobe on tiny lavfi clips."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from helpers import children

from ffmpeg_api.errors import InputRejected, ValidationError
from ffmpeg_api.media import analyze, gpu, plan, probe, runner, spec
from ffmpeg_api.media.plan import Step

MAX_PX = 4096 * 2160


def ffprobe(path: str) -> dict:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json", path],
        check=True,
        capture_output=True,
        timeout=30,
    ).stdout
    return json.loads(out)


def stream(info: dict, kind: str) -> dict:
    return next(s for s in info["streams"] if s["codec_type"] == kind)


def run(clip, output, ops, work_dir, *, reference=None, **kw):
    info = probe.probe(clip)
    operations = spec.parse_request(output, ops, max_output_pixels=MAX_PX)
    steps = plan.build_plan(
        input_path=clip,
        info=info,
        operations=operations,
        output_format=output,
        work_dir=work_dir,
        encoder=kw.pop("encoder", "cpu"),
        reference_path=reference,
    )
    result = runner.run_plan(steps, timeout=kw.pop("timeout", 60), **kw)
    return steps, result


def _children() -> list[int]:
    """ffmpeg processes started by this process (the session may also own database servers)."""
    return [pid for pid in children(os.getpid()) if _is_ffmpeg(str(pid))]


def _is_ffmpeg(pid: str) -> bool:
    try:
        with open(f"/proc/{pid}/comm") as fh:
            return fh.read().strip() == "ffmpeg"
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


LONG_ENCODE = [
    "ffmpeg",
    *plan.COMMON_ARGS,
    *plan.LOGLEVEL_ARGS,
    "-f",
    "lavfi",
    "-i",
    "testsrc2=s=1280x720:r=30:d=60",
    "-c:v",
    "libx264",
    "-preset",
    "slow",
    "-f",
    "null",
    "-",
]


# --------------------------------------------------------------------------- probe


def test_probe_reports_streams(clips):
    info = probe.probe(clips["av"])
    assert info.has_video and info.has_audio
    assert (info.width, info.height) == (320, 240)
    assert info.fps == 25
    assert info.video_codec == "h264" and info.audio_codec == "aac"
    assert abs(info.duration - 3.0) < 0.1
    assert info.format_name.startswith("mov")
    assert info.size == os.path.getsize(clips["av"])
    silent = probe.probe(clips["silent"])
    assert silent.has_video and not silent.has_audio
    tone = probe.probe(clips["tone"])
    assert tone.has_audio and not tone.has_video and tone.width is None


def test_probe_rejects_hls_playlist_referencing_local_files(tmp_path):
    playlist = tmp_path / "evil.m3u8"
    playlist.write_text(
        "#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10.0,\n/etc/passwd\n#EXT-X-ENDLIST\n"
    )
    with pytest.raises(InputRejected, match=r"not allowed|whitelist"):
        probe.probe(str(playlist))


def test_probe_rejects_concat_list(tmp_path, clips):
    listing = tmp_path / "list.txt"
    listing.write_text(f"ffconcat version 1.0\nfile '/etc/passwd'\nfile '{clips['av']}'\n")
    with pytest.raises(InputRejected):
        probe.probe(str(listing))


def test_probe_rejects_garbage_and_missing(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(InputRejected):
        probe.probe(str(junk))
    with pytest.raises(InputRejected, match="does not exist"):
        probe.probe(str(tmp_path / "missing.mp4"))
    with pytest.raises(InputRejected) as exc:
        probe.probe(str(junk))
    assert str(tmp_path) not in exc.value.message  # server paths are not echoed


def test_check_limits(clips):
    info = probe.probe(clips["av"])
    probe.check_limits(info, max_duration=10, max_pixels=320 * 240)
    with pytest.raises(InputRejected, match="long"):
        probe.check_limits(info, max_duration=2, max_pixels=0)
    with pytest.raises(InputRejected, match="pixels"):
        probe.check_limits(info, max_duration=0, max_pixels=320 * 200)


# --------------------------------------------------------------------------- operations


def test_transcode_h264_scale_fps_and_progress(clips, work_dir):
    seen = []
    steps, result = run(
        clips["av"],
        "mp4",
        [
            {
                "type": "transcode",
                "video_codec": "h264",
                "preset": "ultrafast",
                "crf": 30,
                "width": 160,
                "fps": 15,
                "audio_bitrate": "64k",
            }
        ],
        work_dir,
        on_progress=lambda f, eta, stage: seen.append((f, eta, stage)),
        poll_interval=0.05,
    )
    assert result.primary_output == "output.mp4" == plan.primary_output(steps)
    out = ffprobe(os.path.join(work_dir, "output.mp4"))
    v, a = stream(out, "video"), stream(out, "audio")
    assert v["codec_name"] == "h264" and (v["width"], v["height"]) == (160, 120)
    assert v["avg_frame_rate"] == "15/1"
    assert a["codec_name"] == "aac"
    fractions = [f for f, _, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert seen[-1][1] == 0.0


@pytest.mark.parametrize(
    ("output", "op", "codec"),
    [
        ("mkv", {"video_codec": "h265", "preset": "ultrafast", "crf": 35}, "hevc"),
        ("webm", {"video_codec": "vp9", "preset": "realtime", "video_bitrate": "300k"}, "vp9"),
        ("webm", {"video_codec": "av1", "preset": 12, "crf": 45}, "av1"),
        ("mp4", {"video_codec": "av1", "preset": "12", "height": 120}, "av1"),
    ],
)
def test_transcode_codecs(clips, work_dir, output, op, codec):
    run(clips["av"], output, [{"type": "transcode", **op}], work_dir)
    out = ffprobe(os.path.join(work_dir, f"output.{output}"))
    assert stream(out, "video")["codec_name"] == codec
    expected_audio = "opus" if output == "webm" else "aac"
    assert stream(out, "audio")["codec_name"] == expected_audio
    if "height" in op:
        assert stream(out, "video")["height"] == op["height"]


def test_trim_with_transcode(clips, work_dir):
    run(
        clips["av"],
        "mp4",
        [
            {"type": "trim", "start": 0.5, "end": "00:00:02.000"},
            {"type": "transcode", "preset": "ultrafast", "audio_codec": "none"},
        ],
        work_dir,
    )
    out = ffprobe(os.path.join(work_dir, "output.mp4"))
    assert abs(float(out["format"]["duration"]) - 1.5) <= 0.2
    assert [s["codec_type"] for s in out["streams"]] == ["video"]


def test_trim_only_to_audio_container(clips, work_dir):
    run(clips["av"], "mp3", [{"type": "trim", "start": 1, "duration": 1}], work_dir)
    out = ffprobe(os.path.join(work_dir, "output.mp3"))
    assert [s["codec_name"] for s in out["streams"]] == ["mp3"]
    assert abs(float(out["format"]["duration"]) - 1.0) <= 0.2


def test_trim_beyond_duration_is_rejected(clips, work_dir):
    with pytest.raises(ValidationError) as exc:
        run(clips["av"], "mp4", [{"type": "trim", "start": 30}], work_dir)
    assert exc.value.field == "operations[0].start"


def test_thumbnails_by_count(clips, work_dir):
    _steps, result = run(
        clips["wide"], "mp4", [{"type": "thumbnail", "count": 3, "width": 160}], work_dir
    )
    assert result.primary_output is None
    names = sorted(n for n in os.listdir(work_dir) if n.startswith("thumb_"))
    assert names == ["thumb_001.jpg", "thumb_002.jpg", "thumb_003.jpg"]
    v = stream(ffprobe(os.path.join(work_dir, names[0])), "video")
    assert v["codec_name"] == "mjpeg" and (v["width"], v["height"]) == (160, 90)


def test_thumbnails_up_to_the_last_frame(clips, work_dir):
    # 2.99 s lies past the final frame's timestamp (2.96 s): seeking there yields no picture
    _steps, result = run(clips["av"], "mp4", [{"type": "thumbnail", "at": [2.99]}], work_dir)
    assert result.outputs == ["thumb_001.jpg"]


def test_thumbnails_at_times_as_primary_png(clips, work_dir):
    _steps, result = run(clips["av"], "png", [{"type": "thumbnail", "at": [0, 1.5]}], work_dir)
    assert result.primary_output == "thumb_001.png"
    assert sorted(os.listdir(work_dir)) == ["thumb_001.png", "thumb_002.png"]
    v = stream(ffprobe(os.path.join(work_dir, "thumb_002.png")), "video")
    assert v["codec_name"] == "png" and v["width"] == 320


def test_hls_ladder(clips, work_dir):
    ladder = [
        {"height": 240, "video_bitrate": "400k"},
        {"height": 144, "video_bitrate": "150k", "audio_bitrate": "48k"},
    ]
    _steps, result = run(
        clips["av"], "m3u8", [{"type": "hls", "ladder": ladder, "segment_duration": 2}], work_dir
    )
    assert result.primary_output == "master.m3u8"
    master = open(os.path.join(work_dir, "master.m3u8")).read()
    assert master.count("#EXT-X-STREAM-INF") == 2
    assert "RESOLUTION=320x240" in master and "RESOLUTION=192x144" in master
    for i in range(2):
        playlist = open(os.path.join(work_dir, f"v{i}", "index.m3u8")).read()
        segments = [ln for ln in playlist.splitlines() if ln.endswith(".ts")]
        assert len(segments) >= 2
        for seg in segments:
            assert os.path.getsize(os.path.join(work_dir, f"v{i}", seg)) > 0
    v = stream(ffprobe(os.path.join(work_dir, "v1", "seg_00000.ts")), "video")
    assert v["codec_name"] == "h264" and v["height"] == 144


def test_hls_without_audio(clips, work_dir):
    run(
        clips["silent"],
        "m3u8",
        [{"type": "hls", "ladder": [{"height": 120, "video_bitrate": "100k"}]}],
        work_dir,
    )
    assert os.path.exists(os.path.join(work_dir, "v0", "index.m3u8"))


@pytest.mark.parametrize(
    ("codec", "name", "codec_name"),
    [
        ("aac", "audio.m4a", "aac"),
        ("mp3", "audio.mp3", "mp3"),
        ("opus", "audio.opus", "opus"),
        ("flac", "audio.flac", "flac"),
        ("wav", "audio.wav", "pcm_s16le"),
    ],
)
def test_extract_audio(clips, work_dir, codec, name, codec_name):
    _steps, result = run(clips["av"], "mp4", [{"type": "extract_audio", "codec": codec}], work_dir)
    assert result.outputs == [name]
    out = ffprobe(os.path.join(work_dir, name))
    assert [s["codec_name"] for s in out["streams"]] == [codec_name]
    assert abs(float(out["format"]["duration"]) - 3.0) <= 0.2


def test_extract_audio_without_audio_is_rejected(clips, work_dir):
    with pytest.raises(InputRejected):
        run(clips["silent"], "mp4", [{"type": "extract_audio"}], work_dir)


def test_analyze_identical_and_degraded(clips, work_dir, tmp_path):
    op = {"type": "analyze", "reference": "ref.mp4", "metrics": ["psnr", "ssim"]}
    _steps, result = run(clips["av"], "mp4", [op], work_dir, reference=clips["av"])
    same = result.analysis
    assert result.result == same
    assert same["metrics"]["ssim"]["all"] == pytest.approx(1.0, abs=1e-6)
    assert same["metrics"]["psnr"]["infinite"] is True
    assert same["metadata"]["streams"][0]["type"] == "video"
    assert same["metadata"]["width"] == 320
    with open(os.path.join(work_dir, "analysis.json")) as fh:
        assert json.load(fh) == same

    other = str(tmp_path / "work2")
    _, result = run(clips["degraded"], "mp4", [op], other, reference=clips["av"])
    metrics = result.analysis["metrics"]
    assert 15 < metrics["psnr"]["average"] < 60 and metrics["psnr"]["infinite"] is False
    assert 0.5 < metrics["ssim"]["all"] < 1.0


def test_analyze_scales_reference_and_metadata_only(clips, work_dir, tmp_path):
    op = {"type": "analyze", "metadata": False, "reference": "r", "metrics": ["ssim"]}
    _, result = run(clips["av"], "mp4", [op], work_dir, reference=clips["wide"])
    assert set(result.analysis) == {"metrics", "reference"}
    assert 0 < result.analysis["metrics"]["ssim"]["all"] <= 1
    assert result.analysis["reference"]["width"] == 640
    _, result = run(clips["tone"], "mp3", [{"type": "analyze"}], str(tmp_path / "w3"))
    assert result.analysis["metadata"]["audio_codec"] == "pcm_s16le"


def test_analyze_rejects_playlist_reference(clips, work_dir, tmp_path):
    playlist = tmp_path / "ref.m3u8"
    playlist.write_text("#EXTM3U\n#EXTINF:1,\n/etc/passwd\n#EXT-X-ENDLIST\n")
    op = {"type": "analyze", "reference": "r", "metrics": ["psnr"]}
    with pytest.raises(InputRejected):
        run(clips["av"], "mp4", [op], work_dir, reference=str(playlist))


# --------------------------------------------------------------------------- runner


def test_cancel_stops_ffmpeg_quickly(tmp_path):
    step = Step("transcode", LONG_ENCODE, [], 60.0, work_dir=str(tmp_path))
    started = time.monotonic()
    state = {"pids": set(), "flipped": None}

    def should_cancel():
        state["pids"].update(_children())
        if time.monotonic() - started >= 1.0:
            if state["flipped"] is None:
                state["flipped"] = time.monotonic()
            return True
        return False

    with pytest.raises(runner.Cancelled):
        runner.run_step(step, on_progress=None, should_cancel=should_cancel, timeout=120)
    stopped = time.monotonic()
    assert state["pids"], "ffmpeg child was never seen"
    assert stopped - state["flipped"] < 2.0
    assert not any(_alive(pid) for pid in state["pids"])


def test_timeout_kills_ffmpeg(tmp_path):
    step = Step("transcode", LONG_ENCODE, [], 60.0, work_dir=str(tmp_path))
    started = time.monotonic()
    with pytest.raises(runner.StepTimeout) as exc:
        runner.run_step(step, timeout=1.0, poll_interval=0.1)
    assert time.monotonic() - started < 3.5
    assert isinstance(exc.value, runner.MediaError)
    assert not [pid for pid in _children() if _alive(pid)]


def test_failure_carries_meaningful_message(tmp_path):
    argv = [
        "ffmpeg",
        *plan.COMMON_ARGS,
        *plan.LOGLEVEL_ARGS,
        *probe.whitelist_args(),
        "-i",
        probe.file_url(str(tmp_path / "nope.mp4")),
        "-f",
        "null",
        "-",
    ]
    with pytest.raises(runner.FFmpegFailed) as exc:
        runner.run_step(Step("transcode", argv, [], 1.0), timeout=30)
    assert "No such file" in exc.value.message
    assert exc.value.returncode != 0 and "No such file" in exc.value.stderr_tail


def test_ffmpeg_dies_with_a_sigkilled_worker(tmp_path):
    script = textwrap.dedent(
        f"""
        import os, sys
        from ffmpeg_api.media import runner
        from ffmpeg_api.media.plan import Step
        argv = {LONG_ENCODE!r}
        def should_cancel():
            for entry in os.listdir("/proc"):
                if entry.isdigit():
                    try:
                        stat = open(f"/proc/{{entry}}/stat").read().rsplit(")", 1)[1].split()
                    except OSError:
                        continue
                    if int(stat[1]) == os.getpid():
                        print(entry, flush=True)
            return False
        runner.run_step(Step("t", argv, [], 60.0), should_cancel=should_cancel,
                        timeout=120, poll_interval=0.2)
        """
    )
    worker = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=str(tmp_path)
    )
    try:
        ffmpeg_pid = int(worker.stdout.readline())
        assert _alive(ffmpeg_pid)
        worker.send_signal(signal.SIGKILL)
        worker.wait(5)
        deadline = time.monotonic() + 2.0
        while _alive(ffmpeg_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(ffmpeg_pid)
    finally:
        if worker.poll() is None:
            worker.kill()
        worker.stdout.close()


def test_missing_output_is_a_failure(clips, tmp_path):
    info = probe.probe(clips["av"])
    steps = plan.build_plan(
        input_path=clips["av"],
        info=info,
        operations=spec.parse_request("mp4", [{"type": "extract_audio"}], max_output_pixels=0),
        output_format="mp4",
        work_dir=str(tmp_path),
    )
    steps[0].outputs = ["never-written.m4a"]
    with pytest.raises(runner.FFmpegFailed, match="no output"):
        runner.run_plan(steps, timeout=30)


def test_plan_cancelled_between_steps(clips, work_dir):
    with pytest.raises(runner.Cancelled):
        run(clips["av"], "mp4", [{"type": "extract_audio"}], work_dir, should_cancel=lambda: True)


# --------------------------------------------------------------------------- gpu


def test_gpu_probe_reports_unavailable_with_reason():
    gpu.clear_cache()
    result = gpu.probe_gpu()
    if result.available:  # pragma: no cover - only on a machine with a working NVENC
        assert "h264_nvenc" in result.encoders
        return
    assert result.encoders == ()
    assert result.reason and "h264_nvenc" in result.reason
    assert gpu.probe_gpu() is result  # cached
    gpu.clear_cache()
    assert gpu.probe_gpu(ffmpeg_bin="/nonexistent/ffmpeg").reason.count("not found") == 3


def test_gpu_plan_falls_back_to_cpu_for_unavailable_encoders(clips, work_dir):
    # vp9 has no NVENC encoder, and an empty gpu_encoders list forces the CPU path
    info = probe.probe(clips["av"])
    ops = spec.parse_request(
        "webm", [{"type": "transcode", "preset": "realtime"}], max_output_pixels=0
    )
    steps = plan.build_plan(
        input_path=clips["av"],
        info=info,
        operations=ops,
        output_format="webm",
        work_dir=work_dir,
        encoder="gpu",
        gpu_encoders=(),
    )
    assert "libvpx-vp9" in steps[0].argv
    runner.run_plan(steps, timeout=60)
    assert stream(ffprobe(os.path.join(work_dir, "output.webm")), "video")["codec_name"] == "vp9"


def test_analysis_module_parses_real_output(clips, work_dir):
    argv = plan.analyze_argv(
        "ffmpeg", clips["av"], clips["degraded"], width=320, height=240, metrics=["psnr"]
    )
    res = runner.run_step(Step("analyze", argv, [], 3.0), timeout=30)
    values = analyze.parse_metrics(res.stderr_tail)
    assert set(values) == {"psnr"} and values["psnr"]["average"] > 10
