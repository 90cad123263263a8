"""Cost limits (issue 14, item 4), the pure part: the output pixel-rate cap, the decoder guard
on every command that decodes client media, the planned-work timeouts and the output-seconds a
plan counts against the daily quota."""

from __future__ import annotations

import pytest

from ffmpeg_api import jobs
from ffmpeg_api.errors import ValidationError
from ffmpeg_api.media import plan, probe, spec
from ffmpeg_api.media.probe import MediaInfo
from ffmpeg_api.settings import Settings

INPUT = "/srv/storage/uploads/in.mkv"
WORK = "/srv/storage/tmp/job.0"
DEFAULTS = Settings()


def info(width=1920, height=1080, fps=25.0, duration=10.0, audio=True):
    return MediaInfo(
        duration=duration,
        format_name="matroska,webm",
        size=27_000,
        has_video=True,
        has_audio=audio,
        width=width,
        height=height,
        fps=fps,
        video_codec="h264",
        audio_codec="aac" if audio else None,
    )


def build(ops, media=None, output="mp4", **kw):
    kw.setdefault("max_output_pixel_rate", DEFAULTS.max_output_pixel_rate)
    return plan.build_plan(
        input_path=INPUT,
        info=media or info(),
        operations=spec.parse_request(output, ops, max_output_pixels=0),
        output_format=output,
        work_dir=WORK,
        **kw,
    )


def opt(argv, name):
    return argv[argv.index(name) + 1]


# --- pixel-rate cap -----------------------------------------------------------------------


def test_default_cap_refuses_4k_at_120_and_allows_4k30_and_1080p60():
    uhd = info(4096, 2160, fps=30.0)
    with pytest.raises(ValidationError) as exc:
        build([{"type": "transcode", "fps": 120}], uhd)
    assert exc.value.field == "operations[0].fps"
    assert "4096x2160 at 120 fps" in exc.value.message
    build([{"type": "transcode", "fps": 30}], uhd)
    build([{"type": "transcode"}], uhd)  # keeps the input's 30 fps
    build([{"type": "transcode", "fps": 60}], info(1920, 1080, fps=60.0))


def test_the_probed_fps_counts_when_the_request_sets_none():
    fast = info(4096, 2160, fps=120.0)
    with pytest.raises(ValidationError) as exc:
        build([{"type": "trim", "duration": 1}, {"type": "transcode"}], fast)
    assert exc.value.field == "operations[1].fps"
    # lowering the fps or the size is the remedy
    build([{"type": "transcode", "fps": 30}], fast)
    build([{"type": "transcode", "height": 1080}], fast)


def test_every_hls_rung_is_capped():
    fast = info(4096, 2160, fps=120.0)
    ladder = [
        {"height": 720, "video_bitrate": "3M"},
        {"height": 2160, "video_bitrate": "20M"},
    ]
    with pytest.raises(ValidationError) as exc:
        build([{"type": "hls", "ladder": ladder}], fast, output="m3u8")
    assert exc.value.field == "operations[0].ladder[1].height"
    build([{"type": "hls", "ladder": ladder[:1]}], fast, output="m3u8")


def test_zero_disables_the_cap():
    build([{"type": "transcode", "fps": 120}], info(4096, 2160), max_output_pixel_rate=0)


def test_the_cap_is_checked_at_submission_and_in_the_worker_with_the_setting():
    assert DEFAULTS.max_output_pixel_rate == 4096 * 2160 * 60
    assert Settings.from_env({"MAX_OUTPUT_PIXEL_RATE": "0"}).max_output_pixel_rate == 0


# --- decoder guard ------------------------------------------------------------------------


def test_guard_admits_every_landscape_picture_within_the_limit_despite_row_padding():
    limit = 330 * 240
    guard = probe.decoder_max_pixels(limit)
    assert 384 * 240 <= guard  # the decoder checks 330 padded to 384
    assert guard < 1280 * 720  # a later 720p picture is still refused
    default = probe.decoder_max_pixels(DEFAULTS.max_input_pixels)
    assert 4096 * 2160 <= default < 4096 * 2160 * 1.022
    assert probe.decoder_guard_args(0) == []
    assert probe.decoder_max_pixels(2**40) == 2**31 - 1  # ffmpeg's INT_MAX bound


def _guarded_inputs(argv, guard):
    """Every -i of argv is preceded (after its previous -i) by -max_pixels guard."""
    starts = [i for i, a in enumerate(argv) if a == "-i"]
    previous = 0
    for i in starts:
        head = argv[previous:i]
        assert "-max_pixels" in head, argv
        assert head[head.index("-max_pixels") + 1] == str(guard)
        previous = i + 1
    return len(starts)


def test_every_command_that_decodes_the_input_carries_max_pixels():
    limit = 1920 * 1080
    guard = probe.decoder_max_pixels(limit)
    ops = [
        {"type": "trim", "start": 1, "duration": 4},
        {"type": "transcode", "height": 480},
        {"type": "thumbnail", "count": 2},
        {"type": "hls", "ladder": [{"height": 360, "video_bitrate": "800k"}]},
        {"type": "extract_audio"},
        {"type": "analyze", "reference": "uploads/ref.mkv", "metrics": ["psnr"]},
    ]
    steps = build(ops, max_input_pixels=limit, reference_path="/srv/storage/uploads/ref.mkv")
    assert {s.name for s in steps} == {"transcode", "thumbnail", "hls", "extract_audio", "analyze"}
    inputs = {s.name: _guarded_inputs(s.argv, guard) for s in steps}
    assert inputs["analyze"] == 2  # the input and the reference
    analyze = next(s for s in steps if s.name == "analyze")
    assert analyze.analyze["max_input_pixels"] == limit  # its ffprobe runs get it too


def test_probe_passes_the_guard_to_ffprobe(tmp_path, monkeypatch):
    media = tmp_path / "in.mkv"
    media.write_bytes(b"x")
    seen = {}

    class Done:
        returncode = 1
        stdout = b""
        stderr = b"stop here"

    def fake_run(argv, **_kw):
        seen["argv"] = argv
        return Done()

    monkeypatch.setattr(probe.subprocess, "run", fake_run)
    with pytest.raises(probe.InputRejected):
        probe.probe(str(media), max_pixels=1000)
    argv = seen["argv"]
    assert opt(argv, "-max_pixels") == str(probe.decoder_max_pixels(1000))
    assert argv.index("-max_pixels") < argv.index("file:" + str(media))


# --- planned work, timeouts and output-seconds -------------------------------------------

# The attack file of issue 14: 27 KB, claiming 3.9 h of 4096x2160 (at 0.01 fps).
CLAIM = info(4096, 2160, fps=0.01, duration=3.9 * 3600, audio=False)


def old_rule(settings, duration, n_operations):
    return (settings.job_timeout_base + settings.job_timeout_factor * duration) * n_operations


def test_a_tiny_file_claiming_hours_no_longer_gets_a_39_hour_timeout():
    steps = build([{"type": "transcode"}], CLAIM)
    assert old_rule(DEFAULTS, CLAIM.duration, 1) > 39 * 3600
    timeout = jobs.planned_timeout(DEFAULTS, steps)
    assert timeout == pytest.approx(60 + 10 * 0.01 * CLAIM.duration)  # the 0.01 floor
    assert timeout < 30 * 60
    with pytest.raises(ValidationError):
        build([{"type": "transcode", "fps": 120}], CLAIM)  # the amplification itself


def test_step_work_weights_pixels_encoded_and_decoded_against_1080p30():
    (same,) = build([{"type": "transcode", "height": 1080, "audio_codec": "none"}], info(fps=30))
    assert same.work == pytest.approx(10 * (1 + 1 / 8))
    (small,) = build([{"type": "transcode", "height": 480}], info(fps=30))
    assert small.work == pytest.approx(
        10 * (854 * 480 * 30 / plan.REFERENCE_PIXEL_RATE + 1 / 8 + 0.02)
    )
    (uhd,) = build([{"type": "transcode", "audio_codec": "none"}], info(4096, 2160, fps=30))
    assert uhd.work == pytest.approx(
        10 * 4096 * 2160 * 30 * (1 + 1 / 8) / plan.REFERENCE_PIXEL_RATE
    )
    assert jobs.step_timeout(DEFAULTS, uhd) == pytest.approx(60 + 10 * uhd.work)


def test_trim_and_thumbnails_get_the_time_of_their_own_work():
    long = info(duration=3 * 3600)
    (trimmed,) = build([{"type": "trim", "duration": 10}, {"type": "transcode"}], long)
    assert trimmed.duration == 10
    assert jobs.step_timeout(DEFAULTS, trimmed) < 200
    thumbs = build([{"type": "thumbnail", "count": 3}], long, output="jpg")
    assert all(jobs.step_timeout(DEFAULTS, s) < 61 for s in thumbs)
    # the job's limit is the sum of its steps', not the longest step times the operations
    both = build(
        [
            {"type": "trim", "duration": 10},
            {"type": "transcode"},
            {"type": "thumbnail", "count": 1},
        ],
        long,
    )
    assert jobs.planned_timeout(DEFAULTS, both) == pytest.approx(
        sum(jobs.step_timeout(DEFAULTS, s) for s in both)
    )


def test_job_timeout_prefers_the_stored_plan_and_keeps_old_rows_working():
    assert jobs.job_timeout(DEFAULTS, {"timeout_seconds": 321.0, "input_duration": 9e9}) == 321.0
    legacy = {"timeout_seconds": None, "input_duration": 100.0, "operations": [{}, {}]}
    assert jobs.job_timeout(DEFAULTS, legacy) == old_rule(DEFAULTS, 100.0, 2)


def test_output_seconds_count_each_encoded_output():
    ops = [
        {"type": "trim", "duration": 4},
        {"type": "transcode", "height": 480},
        {"type": "hls", "ladder": [{"height": 360, "video_bitrate": "800k"}] * 3},
        {"type": "thumbnail", "count": 5},
        {"type": "extract_audio"},
        {"type": "analyze"},
    ]
    steps = build(ops, info(duration=10))
    # transcode 4 s (trimmed), hls 3 rungs x 10 s (a side output: whole input), audio 10 s
    assert plan.output_seconds(steps) == pytest.approx(4 + 3 * 10 + 10)
