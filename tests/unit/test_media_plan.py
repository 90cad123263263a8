"""Command planning, progress parsing and stderr/metric parsing (pure: no ffmpeg)."""

from __future__ import annotations

import pytest

from ffmpeg_api.errors import InputRejected, ValidationError
from ffmpeg_api.media import analyze, plan, probe, runner, spec
from ffmpeg_api.media.probe import MediaInfo

INPUT = "/srv/storage/uploads/in.mp4"
WORK = "/srv/storage/tmp/job.0"
AV = MediaInfo(
    duration=10.0,
    format_name="mov,mp4,m4a,3gp,3g2,mj2",
    size=1000,
    has_video=True,
    has_audio=True,
    width=1920,
    height=1080,
    fps=25.0,
    video_codec="h264",
    audio_codec="aac",
)
AUDIO = MediaInfo(
    duration=10.0, format_name="wav", size=10, has_video=False, has_audio=True, audio_codec="pcm"
)
SILENT = MediaInfo(
    duration=10.0,
    format_name="matroska,webm",
    size=10,
    has_video=True,
    has_audio=False,
    width=640,
    height=360,
    fps=30.0,
)


def build(output, ops, info=AV, **kw):
    operations = spec.parse_request(output, ops, max_output_pixels=0)
    return plan.build_plan(
        input_path=INPUT,
        info=info,
        operations=operations,
        output_format=output,
        work_dir=WORK,
        **{"encoder": "cpu", **kw},
    )


def opt(argv, name):
    """Value following the first occurrence of option `name`."""
    return argv[argv.index(name) + 1]


def assert_safe_input(argv, path=INPUT):
    i = argv.index("file:" + path)
    assert argv[i - 1] == "-i"
    head = argv[: i - 1]
    # whitelist precedes this -i (and is the most recent one before it)
    last_pw = len(head) - 1 - head[::-1].index("-protocol_whitelist")
    assert head[last_pw + 1] == "file"
    assert head[last_pw + 2] == "-format_whitelist"
    allowed = head[last_pw + 3].split(",")
    assert "mov" in allowed and "matroska" in allowed
    for bad in ("hls", "concat", "applehttp", "dash", "ffconcat", "tee", "lavfi", "data"):
        assert bad not in allowed


def test_common_arguments_and_whitelist_on_every_step():
    steps = build(
        "mp4",
        [
            {"type": "transcode"},
            {"type": "thumbnail", "count": 2},
            {"type": "hls", "ladder": [{"height": 360, "video_bitrate": "800k"}]},
            {"type": "extract_audio"},
            {"type": "analyze", "reference": "r.mp4", "metrics": ["psnr"]},
        ],
        reference_path="/srv/storage/uploads/ref.mp4",
    )
    assert [s.name for s in steps] == [
        "transcode", "hls", "thumbnail", "thumbnail", "extract_audio", "analyze",
    ]  # fmt: skip
    for step in steps:
        argv = step.argv
        assert argv[0] == "ffmpeg"
        for flag in ("-hide_banner", "-nostdin", "-y", "-nostats"):
            assert flag in argv
        assert opt(argv, "-progress") == "pipe:1"
        assert opt(argv, "-loglevel").startswith("level+")
        assert_safe_input(argv)
        assert step.work_dir == WORK
        for out in step.outputs:
            assert not out.startswith("/") and ".." not in out
    assert_safe_input(steps[-1].argv, "/srv/storage/uploads/ref.mp4")
    assert plan.primary_output(steps) == "output.mp4"
    assert steps[0].argv[-1] == f"file:{WORK}/output.mp4"


@pytest.mark.parametrize(
    ("codec", "encoder", "expected"),
    [
        ("h264", "cpu", "libx264"),
        ("h265", "cpu", "libx265"),
        ("vp9", "cpu", "libvpx-vp9"),
        ("av1", "cpu", "libsvtav1"),
        ("h264", "gpu", "h264_nvenc"),
        ("h265", "gpu", "hevc_nvenc"),
        ("av1", "gpu", "av1_nvenc"),
        ("vp9", "gpu", "libvpx-vp9"),  # no NVENC for vp9: CPU fallback
    ],
)
def test_codec_mapping(codec, encoder, expected):
    (step,) = build("mkv", [{"type": "transcode", "video_codec": codec}], encoder=encoder)
    assert opt(step.argv, "-c:v") == expected
    if expected.endswith("_nvenc"):
        assert opt(step.argv, "-gpu") == "0"
        assert opt(step.argv, "-preset").startswith("p")
        assert "-crf" not in step.argv and opt(step.argv, "-cq")


def test_gpu_falls_back_for_encoders_the_probe_did_not_confirm():
    ops = [{"type": "transcode", "video_codec": "av1"}]
    (step,) = build("mkv", ops, encoder="gpu", gpu_encoders=("h264_nvenc",))
    assert opt(step.argv, "-c:v") == "libsvtav1"
    (step,) = build("mkv", ops, encoder="gpu", gpu_device="1")
    assert opt(step.argv, "-c:v") == "av1_nvenc" and opt(step.argv, "-gpu") == "1"


def test_crf_versus_bitrate():
    (step,) = build("mp4", [{"type": "transcode", "crf": 20, "preset": "veryfast"}])
    assert opt(step.argv, "-crf") == "20" and "-b:v" not in step.argv
    assert opt(step.argv, "-preset") == "veryfast"
    (step,) = build("mp4", [{"type": "transcode", "video_bitrate": "2.5M"}])
    assert opt(step.argv, "-b:v") == "2500k" and "-crf" not in step.argv
    (step,) = build("mp4", [{"type": "transcode"}])
    assert opt(step.argv, "-crf") == "23" and opt(step.argv, "-preset") == "medium"
    (step,) = build("webm", [{"type": "transcode", "crf": 33, "preset": "realtime"}])
    assert opt(step.argv, "-crf") == "33" and opt(step.argv, "-b:v") == "0"
    assert opt(step.argv, "-deadline") == "realtime"
    (step,) = build("webm", [{"type": "transcode", "video_codec": "av1", "preset": 10}])
    assert opt(step.argv, "-preset") == "10" and opt(step.argv, "-crf") == "35"
    (step,) = build("mp4", [{"type": "transcode", "video_bitrate": "1M"}], encoder="gpu")
    assert opt(step.argv, "-b:v") == "1M" and "-cq" not in step.argv


def test_scale_and_fps_filters():
    (step,) = build("mp4", [{"type": "transcode", "height": 720, "fps": 30}])
    assert opt(step.argv, "-vf") == "fps=30,scale=-2:720:flags=bicubic,format=yuv420p"
    (step,) = build("mp4", [{"type": "transcode", "width": 640}])
    assert opt(step.argv, "-vf") == "scale=640:-2:flags=bicubic,format=yuv420p"
    (step,) = build("mp4", [{"type": "transcode", "width": 640, "height": 480, "fps": 29.97}])
    assert opt(step.argv, "-vf") == "fps=29.97,scale=640:480:flags=bicubic,setsar=1,format=yuv420p"
    (step,) = build("mp4", [{"type": "transcode"}])
    assert opt(step.argv, "-vf") == "format=yuv420p"


def test_trim_placement_before_input():
    steps = build("mp4", [{"type": "trim", "start": 2.5, "end": 7}, {"type": "transcode"}])
    (step,) = steps
    argv = step.argv
    i = argv.index("-i")
    assert opt(argv, "-ss") == "2.5" and argv.index("-ss") < i
    assert opt(argv, "-t") == "4.5" and argv.index("-t") < i
    assert step.duration == 4.5
    (step,) = build("mp4", [{"type": "trim", "start": 4}])
    assert "-t" not in step.argv and step.duration == 6.0
    (step,) = build("mp4", [{"type": "trim", "end": 3}])
    assert "-ss" not in step.argv and opt(step.argv, "-t") == "3"
    (step,) = build("mp4", [{"type": "trim", "start": 8, "duration": 100}])
    assert opt(step.argv, "-t") == "2"  # clipped to the input
    with pytest.raises(ValidationError) as exc:
        build("mp4", [{"type": "transcode"}, {"type": "trim", "start": 10}])
    assert exc.value.field == "operations[1].start"


def test_trim_only_uses_container_defaults_and_audio_only_outputs():
    (step,) = build("webm", [{"type": "trim", "start": 1}])
    assert opt(step.argv, "-c:v") == "libvpx-vp9" and opt(step.argv, "-c:a") == "libopus"
    (step,) = build("mp3", [{"type": "trim", "start": 1}])
    assert "-vn" in step.argv and "-c:v" not in step.argv
    assert opt(step.argv, "-c:a") == "libmp3lame" and opt(step.argv, "-f") == "mp3"
    (step,) = build("m4a", [{"type": "transcode", "audio_bitrate": "96k"}], info=AUDIO)
    assert opt(step.argv, "-f") == "ipod" and opt(step.argv, "-b:a") == "96k"
    assert step.outputs == ["output.m4a"]
    (step,) = build("wav", [{"type": "transcode"}], info=AUDIO)
    assert opt(step.argv, "-c:a") == "pcm_s16le"
    with pytest.raises(InputRejected):
        build("mp3", [{"type": "transcode"}], info=SILENT)


def test_stream_mapping():
    (step,) = build("mp4", [{"type": "transcode", "audio_codec": "none"}])
    assert "-an" in step.argv and "0:a:0" not in step.argv
    (step,) = build("mp4", [{"type": "transcode"}], info=SILENT)
    assert "-an" in step.argv and "0:a:0" not in step.argv and opt(step.argv, "-map") == "0:v:0"
    (step,) = build("mkv", [{"type": "transcode", "audio_codec": "copy"}])
    assert opt(step.argv, "-c:a") == "copy"
    (step,) = build("mp4", [{"type": "transcode", "video_codec": "h265"}])
    assert opt(step.argv, "-tag:v") == "hvc1" and opt(step.argv, "-movflags") == "+faststart"


def test_output_pixel_limit_uses_the_real_aspect():
    with pytest.raises(ValidationError) as exc:
        build("mp4", [{"type": "transcode", "width": 4096}], max_output_pixels=4096 * 2160)
    # 1920x1080 input -> 4096x2304 exceeds 4096x2160
    assert exc.value.field == "operations[0].width"
    build("mp4", [{"type": "transcode", "width": 3840}], max_output_pixels=4096 * 2160)


def test_thumbnail_steps():
    steps = build("mp4", [{"type": "thumbnail", "count": 4, "width": 320}])
    assert [s.outputs for s in steps] == [[f"thumb_00{i}.jpg"] for i in range(1, 5)]
    assert [opt(s.argv, "-ss") for s in steps] == ["1.25", "3.75", "6.25", "8.75"]
    argv = steps[0].argv
    assert argv.index("-ss") < argv.index("-i")
    assert opt(argv, "-frames:v") == "1" and opt(argv, "-c:v") == "mjpeg"
    assert opt(argv, "-vf").startswith("scale=320:-2")
    assert plan.primary_output(steps) is None
    steps = build("png", [{"type": "thumbnail", "at": [0, 2]}])
    assert "-ss" not in steps[0].argv and opt(steps[1].argv, "-ss") == "2"
    assert opt(steps[0].argv, "-c:v") == "png" and plan.primary_output(steps) == "thumb_001.png"
    steps = build("mp4", [{"type": "thumbnail", "at": [9.99]}])
    assert opt(steps[0].argv, "-ss") == "9.94"  # 1.5 frames before the end
    with pytest.raises(ValidationError) as exc:
        build("mp4", [{"type": "thumbnail", "at": [1, 12]}])
    assert exc.value.field == "operations[0].at[1]"
    with pytest.raises(InputRejected):
        build("mp4", [{"type": "thumbnail", "count": 1}], info=AUDIO)


def test_hls_step():
    ops = [
        {
            "type": "hls",
            "ladder": [
                {"height": 720, "video_bitrate": "3M"},
                {"height": 360, "video_bitrate": "800k", "audio_bitrate": "64k"},
            ],
            "segment_duration": 4,
        },
        {"type": "trim", "start": 1},
    ]
    (step,) = build("m3u8", ops)
    argv = step.argv
    assert step.primary and step.outputs == ["master.m3u8", "v0/index.m3u8", "v1/index.m3u8"]
    assert opt(argv, "-filter_complex") == (
        "[0:v]format=yuv420p,split=2[s0][s1];"
        "[s0]scale=-2:720:flags=bicubic[v0];[s1]scale=-2:360:flags=bicubic[v1]"
    )
    assert opt(argv, "-var_stream_map") == "v:0,a:0 v:1,a:1"
    assert opt(argv, "-b:v:0") == "3M" and opt(argv, "-b:v:1") == "800k"
    assert opt(argv, "-b:a:0") == "128k" and opt(argv, "-b:a:1") == "64k"
    assert opt(argv, "-hls_time") == "4" and opt(argv, "-c:v") == "libx264"
    assert opt(argv, "-force_key_frames") == "expr:gte(t,n_forced*4)"
    assert opt(argv, "-master_pl_name") == "master.m3u8"
    assert argv[-1] == f"{WORK}/v%v/index.m3u8"
    assert opt(argv, "-ss") == "1"  # trim applies to the HLS primary output
    (step,) = build("m3u8", ops[:1], info=SILENT, encoder="gpu")
    assert opt(step.argv, "-var_stream_map") == "v:0 v:1" and "-c:a" not in step.argv
    assert opt(step.argv, "-c:v") == "h264_nvenc"
    # HLS as a side output of an mp4 job: not primary, not trimmed
    steps = build("mp4", [*ops, {"type": "transcode"}])
    hls = next(s for s in steps if s.name == "hls")
    assert not hls.primary and "-ss" not in hls.argv


def test_extract_audio_steps():
    for codec, ext, enc, muxer in [
        ("aac", "m4a", "aac", "ipod"),
        ("mp3", "mp3", "libmp3lame", "mp3"),
        ("opus", "opus", "libopus", "ogg"),
        ("flac", "flac", "flac", "flac"),
        ("wav", "wav", "pcm_s16le", "wav"),
    ]:
        (step,) = build("mp4", [{"type": "extract_audio", "codec": codec}])
        assert step.outputs == [f"audio.{ext}"] and not step.primary
        assert opt(step.argv, "-c:a") == enc and opt(step.argv, "-f") == muxer
        assert "-vn" in step.argv
    (step,) = build("mp4", [{"type": "extract_audio", "codec": "mp3", "bitrate": "192k"}])
    assert opt(step.argv, "-b:a") == "192k"
    with pytest.raises(InputRejected):
        build("mp4", [{"type": "extract_audio"}], info=SILENT)


def test_analyze_steps():
    (step,) = build("mp4", [{"type": "analyze"}])
    assert step.argv == [] and step.outputs == ["analysis.json"]
    assert step.analyze == {
        "metadata": True,
        "metrics": [],
        "input_path": INPUT,
        "reference_path": None,
        "max_input_pixels": 0,
    }
    ops = [{"type": "analyze", "reference": "whatever", "metrics": ["ssim", "psnr"]}]
    (step,) = build("mp4", ops, reference_path="/srv/ref.mkv")
    graph = opt(step.argv, "-filter_complex")
    assert "[1:v]scale=1920:1080:flags=bicubic" in graph
    assert "[m0][r0]psnr[o0]" in graph and "[m1][r1]ssim[o1]" in graph
    assert "whatever" not in " ".join(step.argv)  # only the resolved path is used
    assert step.argv.count("-f") == 2 and step.argv.count("null") == 2
    with pytest.raises(ValidationError):
        build("mp4", ops)  # reference not resolved by the caller
    with pytest.raises(InputRejected):
        build("mp3", ops, info=AUDIO, reference_path="/srv/ref.mkv")


def test_threads_option():
    (step,) = build("mp4", [{"type": "transcode", "video_codec": "h265"}], threads=3)
    assert opt(step.argv, "-threads") == "3"
    assert opt(step.argv, "-x265-params") == "log-level=warning:pools=3"
    (step,) = build("mp4", [{"type": "transcode"}])
    assert "-threads" not in step.argv


def test_only_validated_values_reach_argv():
    ops = [
        {
            "type": "transcode",
            "video_codec": "H264",
            "preset": "SLOW",
            "video_bitrate": "1.5M",
            "audio_bitrate": 96000,
        }
    ]
    (step,) = build("mp4", ops)
    assert opt(step.argv, "-c:v") == "libx264" and opt(step.argv, "-preset") == "slow"
    assert opt(step.argv, "-b:v") == "1500k" and opt(step.argv, "-b:a") == "96k"


def test_invalid_encoder_arguments():
    with pytest.raises(ValueError):
        build("mp4", [{"type": "transcode"}], encoder="quantum")
    with pytest.raises(ValueError):
        build("mp4", [{"type": "transcode"}], gpu_device="0 -vf x")


def test_step_weights():
    steps = build("mp4", [{"type": "transcode"}, {"type": "thumbnail", "count": 2}])
    assert steps[0].progress_weight == 10.0
    assert steps[1].progress_weight == 0.5
    assert plan._num(1e-7) == "0" and plan._num(2.0) == "2" and plan._num(0.333333333) == "0.333333"


# --------------------------------------------------------------------------- parsing


def test_progress_parser():
    p = runner.ProgressParser()
    assert p.fraction(10) == 0.0
    for line in ["frame=10", "out_time_us=N/A", "out_time_ms=-9223372036854775807", "speed=N/A"]:
        assert p.feed(line) is False
    assert p.out_time is None and p.speed is None
    assert p.feed("progress=continue") is True
    p.feed("out_time_us=2500000")
    p.feed("out_time_ms=2500000")  # microseconds too, despite its name
    p.feed("out_time=00:00:02.500000")
    p.feed("speed=1.75x")
    assert p.out_time == 2.5 and p.speed == 1.75 and p.fraction(10) == 0.25
    p.feed("out_time_us=20000000")
    assert p.fraction(10) == 1.0  # clamped
    assert p.fraction(0) == 0.0 and p.fraction(None) == 0.0
    p.feed("garbage without equals")
    assert p.feed("progress=end") is True and p.ended and p.fraction(None) == 1.0
    q = runner.ProgressParser()
    q.feed("out_time=01:00:03.5")
    assert q.out_time == 3603.5
    assert runner.parse_progress_line(" bitrate= 123.4kbits/s ") == ("bitrate", "123.4kbits/s")
    assert runner.parse_progress_line("nothing") is None


def test_summarize_stderr():
    tail = "\n".join(
        [
            "[mp3 @ 0x1] [warning] Estimating duration from bitrate",
            "[h264_nvenc @ 0x55] [error] Cannot load libcuda.so.1",
            "[error] Error initializing output stream 0:0 -- Error while opening encoder",
            "[fatal] Conversion failed!",
        ]
    )
    assert (
        runner.summarize_stderr(tail, prefer="first")
        == "[h264_nvenc @ 0x55] Cannot load libcuda.so.1"
    )
    assert runner.summarize_stderr(tail).startswith("Error initializing output stream")
    assert runner.summarize_stderr("only a warning line") == "only a warning line"
    assert runner.summarize_stderr("") == ""


def test_exceptions_hierarchy():
    for cls in (runner.Cancelled, runner.StepTimeout, runner.FFmpegFailed):
        assert issubclass(cls, runner.MediaError)
    err = runner.FFmpegFailed("bad", "tail", 1)
    assert (err.message, err.stderr_tail, err.returncode) == ("bad", "tail", 1)
    assert runner.StepTimeout("tail").stderr_tail == "tail"


def test_parse_metrics():
    text = (
        "[Parsed_psnr_2 @ 0x1] [info] PSNR y:38.123 u:42.5 v:43.0 average:39.456789 "
        "min:35.1 max:44.2\n"
        "[Parsed_ssim_3 @ 0x2] [info] SSIM Y:0.981 (17.2) U:0.99 (20.0) V:0.99 (20.1) "
        "All:0.985000 (18.239)\n"
    )
    m = analyze.parse_metrics(text)
    assert m["psnr"]["average"] == 39.456789 and m["psnr"]["infinite"] is False
    assert m["ssim"]["all"] == 0.985 and m["ssim"]["db"] == 18.239
    m = analyze.parse_metrics("PSNR y:inf u:inf v:inf average:inf min:inf max:inf")
    assert m["psnr"]["average"] is None and m["psnr"]["infinite"] is True
    assert analyze.parse_metrics("nothing here") == {}


def test_probe_info_from_ffprobe_json():
    raw = {
        "format": {"format_name": "matroska,webm", "duration": "4.5", "size": "100"},
        "streams": [
            {"codec_type": "video", "codec_name": "png", "disposition": {"attached_pic": 1}},
            {
                "codec_type": "video",
                "codec_name": "vp9",
                "width": 640,
                "height": 360,
                "avg_frame_rate": "30000/1001",
            },
            {"codec_type": "audio", "codec_name": "opus"},
        ],
    }
    info = probe.info_from_ffprobe(raw)
    assert info.video_codec == "vp9" and info.fps == 29.97 and info.duration == 4.5
    assert info.pixels == 640 * 360 and info.has_audio
    with pytest.raises(InputRejected, match="not allowed"):
        probe.info_from_ffprobe({"format": {"format_name": "hls"}, "streams": []})
    with pytest.raises(InputRejected, match="no audio or video"):
        probe.info_from_ffprobe(
            {"format": {"format_name": "mpegts"}, "streams": [{"codec_type": "data"}]}
        )
    cover_only = {
        "format": {"format_name": "mp3"},
        "streams": [
            {"codec_type": "audio", "codec_name": "mp3", "duration": "3.0"},
            {"codec_type": "video", "codec_name": "mjpeg", "disposition": {"attached_pic": 1}},
        ],
    }
    info = probe.info_from_ffprobe(cover_only)
    assert not info.has_video and info.duration == 3.0


def test_whitelist_excludes_playlist_demuxers():
    args = probe.whitelist_args()
    assert args[:2] == ["-protocol_whitelist", "file"]
    formats = set(args[3].split(","))
    assert not formats & {"hls", "applehttp", "concat", "dash", "lavfi", "tee", "data", "sdp"}
    assert probe.file_url("/a/b.mp4") == "file:/a/b.mp4"
    assert probe.file_url("-i.mp4").startswith("file:/")
