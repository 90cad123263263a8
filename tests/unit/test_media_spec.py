"""Validation of `output` + `operations` (pure: no ffmpeg)."""

from __future__ import annotations

import pytest

from ffmpeg_api.errors import ValidationError
from ffmpeg_api.media import schema, spec

MAX_PX = 4096 * 2160


def parse(output, ops, max_px=MAX_PX):
    return spec.parse_request(output, ops, max_output_pixels=max_px)


def rejects(output, ops, field, match=None, max_px=MAX_PX):
    with pytest.raises(ValidationError) as exc:
        parse(output, ops, max_px)
    assert exc.value.field == field, exc.value.message
    assert exc.value.status == 422
    if match:
        assert match in exc.value.message
    return exc.value


def T(**kw):
    return {"type": "transcode", **kw}


# --------------------------------------------------------------------------- accepted


def test_output_formats_map_to_muxers():
    assert set(spec.OUTPUT_FORMATS) == {
        "mp4", "mkv", "webm", "mov", "mp3", "m4a", "aac", "wav", "ogg", "flac", "jpg", "png",
        "m3u8",
    }  # fmt: skip
    assert spec.OUTPUT_FORMATS["mkv"] == "matroska"
    assert spec.OUTPUT_FORMATS["m3u8"] == "hls"
    assert spec.normalize_output_format("HLS") == "m3u8"


def test_transcode_defaults_and_normalisation():
    (op,) = parse("mp4", [T()])
    assert op.type == "transcode"
    assert (op.video_codec, op.audio_codec, op.crf, op.video_bitrate) == ("h264", "aac", None, None)
    (op,) = parse(
        "webm",
        [T(video_codec="AV1", preset="7", video_bitrate="2.5M", height=720, fps=29.97)],
    )
    assert op.video_codec == "av1" and op.preset == "7" and op.video_bitrate == 2_500_000
    assert op.audio_codec == "opus" and op.fps == 29.97 and op.width is None
    (op,) = parse("mkv", [T(video_codec="vp9", preset="good", crf=63, audio_codec="flac")])
    assert op.crf == 63 and op.audio_codec == "flac"
    (op,) = parse("mp3", [T(audio_bitrate="192k")])
    assert op.video_codec is None and op.audio_codec == "mp3" and op.audio_bitrate == 192_000
    (op,) = parse("mp4", [T(crf=0)])
    assert op.crf == 0


def test_every_operation_type_and_round_trip():
    ops = [
        T(video_codec="h265", crf=28, preset="fast", width=1280, height=720, audio_bitrate="96k"),
        {"type": "trim", "start": "00:01:02.5", "duration": 10},
        {"type": "thumbnail", "count": 5, "width": 320, "format": "png"},
        {
            "type": "hls",
            "ladder": [
                {"height": 720, "video_bitrate": "3M"},
                {"height": 360, "video_bitrate": 800000},
            ],
            "segment_duration": 4,
        },
        {"type": "extract_audio", "codec": "mp3", "bitrate": "128k"},
        {"type": "analyze", "reference": "uploads/ref.mp4", "metrics": ["ssim", "psnr"]},
    ]
    parsed = parse("mkv", ops)
    assert [o.type for o in parsed] == [
        "transcode", "trim", "thumbnail", "hls", "extract_audio", "analyze",
    ]  # fmt: skip
    trim = parsed[1]
    assert trim.start == 62.5 and trim.duration == 10 and trim.window(100) == (62.5, 10)
    assert parsed[3].ladder[0].audio_bitrate == spec.DEFAULT_HLS_AUDIO_BITRATE
    assert parsed[5].reference == "uploads/ref.mp4"
    dicts = [o.to_dict() for o in parsed]
    assert dicts[3]["ladder"][1] == {
        "height": 360,
        "video_bitrate": 800000,
        "audio_bitrate": 128000,
    }
    assert dicts[5]["metrics"] == ["ssim", "psnr"]
    assert parse("mkv", dicts) == parsed  # stored form re-validates to the same operations


def test_thumbnail_times():
    (t,) = parse("mp4", [{"type": "thumbnail", "count": 4}])
    assert t.format == "jpg" and t.times(8.0) == [1.0, 3.0, 5.0, 7.0]
    (t,) = parse("mp4", [{"type": "thumbnail", "interval": 2.5}])
    assert t.times(6.0) == [0.0, 2.5, 5.0]
    (t,) = parse("mp4", [{"type": "thumbnail", "interval": 0.1}])
    assert len(t.times(3600)) == spec.MAX_THUMBNAILS
    (t,) = parse("png", [{"type": "thumbnail", "at": [0, "00:00:01.5"]}])
    assert t.format == "png" and t.times(10) == [0.0, 1.5]


def test_trim_forms():
    (t,) = parse("mp4", [{"type": "trim", "start": 5}])
    assert t.window(20.0) == (5.0, None) and t.window() == (5.0, None)
    (t,) = parse("mp4", [{"type": "trim", "end": "1:30"}])
    assert t.start == 0 and t.end == 90.0
    (t,) = parse("mp4", [{"type": "trim", "start": 1, "end": 50}])
    assert t.window(10.0) == (1.0, 9.0)


def test_bitrate_parsing():
    assert spec.parse_bitrate("800k", "f", 1, 10**9) == 800_000
    assert spec.parse_bitrate("2M", "f", 1, 10**9) == 2_000_000
    assert spec.parse_bitrate("1.25m", "f", 1, 10**9) == 1_250_000
    assert spec.parse_bitrate(64000, "f", 1, 10**9) == 64000
    assert spec.format_bitrate(2_000_000) == "2M"
    assert spec.format_bitrate(1_250_000) == "1250k"
    assert spec.format_bitrate(12345) == "12345"


def test_schema_documents_the_same_keys():
    names = {s["properties"]["type"]["enum"][0]: s for s in schema.OPERATION_SCHEMAS.values()}
    assert set(names) == set(spec._PARSERS)
    assert set(names["transcode"]["properties"]) == {
        "type", "video_codec", "crf", "video_bitrate", "preset", "width", "height", "fps",
        "audio_codec", "audio_bitrate",
    }  # fmt: skip
    assert set(names["thumbnail"]["properties"]) == {
        "type", "at", "count", "interval", "width", "format",
    }  # fmt: skip


# --------------------------------------------------------------------------- rejected


@pytest.mark.parametrize(
    ("output", "ops", "field"),
    [
        ("avi", [T()], "output"),
        (None, [T()], "output"),
        ("mp4", "transcode", "operations"),
        ("mp4", [], "operations"),
        ("mp4", [{"type": "analyze"}] * 11, "operations"),
        ("mp4", ["transcode"], "operations[0]"),
        ("mp4", [{"kind": "transcode"}], "operations[0].type"),
        ("mp4", [{"type": "concat"}], "operations[0].type"),
        ("mp4", [T(), T()], "operations[1].type"),
        ("mp4", [T(filter="drawtext")], "operations[0].filter"),
        ("mp4", [T(video_codec="mpeg2")], "operations[0].video_codec"),
        ("mp4", [T(video_codec=264)], "operations[0].video_codec"),
        ("webm", [T(video_codec="h265")], "operations[0].video_codec"),
        ("webm", [T(video_codec="h264")], "operations[0].video_codec"),
        ("mov", [T(video_codec="vp9")], "operations[0].video_codec"),
        ("webm", [T(audio_codec="aac")], "operations[0].audio_codec"),
        ("mp4", [T(audio_codec="vorbis")], "operations[0].audio_codec"),
        ("mp4", [T(audio_codec="alac")], "operations[0].audio_codec"),
        ("mp4", [T(crf=52)], "operations[0].crf"),
        ("mp4", [T(crf=-1)], "operations[0].crf"),
        ("mp4", [T(crf="23")], "operations[0].crf"),
        ("mp4", [T(crf=23.5)], "operations[0].crf"),
        ("mp4", [T(crf=True)], "operations[0].crf"),
        ("webm", [T(crf=64)], "operations[0].crf"),
        ("webm", [T(video_codec="av1", crf=0)], "operations[0].crf"),
        ("mp4", [T(crf=20, video_bitrate="1M")], "operations[0].crf"),
        ("mp4", [T(video_bitrate="fast")], "operations[0].video_bitrate"),
        ("mp4", [T(video_bitrate="1M; rm -rf /")], "operations[0].video_bitrate"),
        ("mp4", [T(video_bitrate="1G")], "operations[0].video_bitrate"),
        ("mp4", [T(video_bitrate="1k")], "operations[0].video_bitrate"),
        ("mp4", [T(preset="placebo")], "operations[0].preset"),
        ("mp4", [T(preset="realtime")], "operations[0].preset"),
        ("webm", [T(preset="fast")], "operations[0].preset"),
        ("webm", [T(video_codec="av1", preset=14)], "operations[0].preset"),
        ("webm", [T(video_codec="av1", preset="medium")], "operations[0].preset"),
        ("mp4", [T(width=641)], "operations[0].width"),
        ("mp4", [T(width=8)], "operations[0].width"),
        ("mp4", [T(height="720")], "operations[0].height"),
        ("mp4", [T(height=10000)], "operations[0].height"),
        ("mp4", [T(fps=0.5)], "operations[0].fps"),
        ("mp4", [T(fps=240)], "operations[0].fps"),
        ("mp4", [T(fps="30")], "operations[0].fps"),
        ("mp4", [T(fps=float("nan"))], "operations[0].fps"),
        ("mp4", [T(audio_codec="flac")], "operations[0].audio_codec"),
        ("mp4", [T(audio_codec="copy", audio_bitrate="128k")], "operations[0].audio_bitrate"),
        ("mp4", [T(audio_bitrate="5M")], "operations[0].audio_bitrate"),
        ("mp3", [T(video_codec="h264")], "operations[0].video_codec"),
        ("mp3", [T(width=640)], "operations[0].width"),
        ("mp3", [T(audio_codec="aac")], "operations[0].audio_codec"),
        ("wav", [T(audio_codec="none")], "operations[0].audio_codec"),
        ("jpg", [T()], "operations[0].type"),
        (
            "m3u8",
            [T(), {"type": "hls", "ladder": [{"height": 360, "video_bitrate": "1M"}]}],
            "operations[0].type",
        ),
        ("m3u8", [{"type": "trim", "start": 1}], "output"),
        ("png", [{"type": "analyze"}], "output"),
        (
            "jpg",
            [{"type": "thumbnail", "count": 1}, {"type": "trim", "start": 1}],
            "operations[1].type",
        ),
        # trim
        ("mp4", [{"type": "trim", "start": -1}], "operations[0].start"),
        ("mp4", [{"type": "trim", "start": "1 minute"}], "operations[0].start"),
        ("mp4", [{"type": "trim", "start": "00:61:00"}], "operations[0].start"),
        ("mp4", [{"type": "trim", "start": float("inf")}], "operations[0].start"),
        ("mp4", [{"type": "trim", "start": 5, "end": 5}], "operations[0].end"),
        ("mp4", [{"type": "trim", "start": 5, "end": "00:00:04"}], "operations[0].end"),
        ("mp4", [{"type": "trim", "end": 5, "duration": 2}], "operations[0].duration"),
        ("mp4", [{"type": "trim", "duration": 0}], "operations[0].duration"),
        ("mp4", [{"type": "trim", "start": 1, "stop": 2}], "operations[0].stop"),
        # thumbnail
        ("mp4", [{"type": "thumbnail"}], "operations[0].at"),
        ("mp4", [{"type": "thumbnail", "count": 2, "interval": 1}], "operations[0].interval"),
        ("mp4", [{"type": "thumbnail", "count": 0}], "operations[0].count"),
        ("mp4", [{"type": "thumbnail", "count": 101}], "operations[0].count"),
        ("mp4", [{"type": "thumbnail", "interval": 0}], "operations[0].interval"),
        ("mp4", [{"type": "thumbnail", "at": []}], "operations[0].at"),
        ("mp4", [{"type": "thumbnail", "at": 3}], "operations[0].at"),
        ("mp4", [{"type": "thumbnail", "at": [1, "x"]}], "operations[0].at[1]"),
        ("mp4", [{"type": "thumbnail", "at": list(range(101))}], "operations[0].at"),
        ("mp4", [{"type": "thumbnail", "count": 1, "format": "gif"}], "operations[0].format"),
        ("mp4", [{"type": "thumbnail", "count": 1, "width": 99}], "operations[0].width"),
        # hls
        ("m3u8", [{"type": "hls"}], "operations[0].ladder"),
        ("m3u8", [{"type": "hls", "ladder": []}], "operations[0].ladder"),
        (
            "m3u8",
            [{"type": "hls", "ladder": [{"height": 360, "video_bitrate": "1M"}] * 7}],
            "operations[0].ladder",
        ),
        ("m3u8", [{"type": "hls", "ladder": ["360p"]}], "operations[0].ladder[0]"),
        (
            "m3u8",
            [{"type": "hls", "ladder": [{"video_bitrate": "1M"}]}],
            "operations[0].ladder[0].height",
        ),
        (
            "m3u8",
            [{"type": "hls", "ladder": [{"height": 360}]}],
            "operations[0].ladder[0].video_bitrate",
        ),
        (
            "m3u8",
            [
                {
                    "type": "hls",
                    "ladder": [
                        {"height": 360, "video_bitrate": "1M"},
                        {"height": 361, "video_bitrate": "1M"},
                    ],
                }
            ],
            "operations[0].ladder[1].height",
        ),
        (
            "m3u8",
            [{"type": "hls", "ladder": [{"height": 360, "video_bitrate": "1M", "codec": "x"}]}],
            "operations[0].ladder[0].codec",
        ),
        (
            "m3u8",
            [
                {
                    "type": "hls",
                    "ladder": [{"height": 360, "video_bitrate": "1M", "audio_bitrate": "big"}],
                }
            ],
            "operations[0].ladder[0].audio_bitrate",
        ),
        (
            "m3u8",
            [
                {
                    "type": "hls",
                    "ladder": [{"height": 360, "video_bitrate": "1M"}],
                    "segment_duration": 11,
                }
            ],
            "operations[0].segment_duration",
        ),
        (
            "m3u8",
            [
                {
                    "type": "hls",
                    "ladder": [{"height": 360, "video_bitrate": "1M"}],
                    "segment_duration": 1,
                }
            ],
            "operations[0].segment_duration",
        ),
        # extract_audio
        ("mp4", [{"type": "extract_audio", "codec": "wma"}], "operations[0].codec"),
        (
            "mp4",
            [{"type": "extract_audio", "codec": "flac", "bitrate": "128k"}],
            "operations[0].bitrate",
        ),
        ("mp4", [{"type": "extract_audio", "bitrate": "huge"}], "operations[0].bitrate"),
        ("mp4", [{"type": "extract_audio", "channels": 2}], "operations[0].channels"),
        # analyze
        ("mp4", [{"type": "analyze", "metadata": "yes"}], "operations[0].metadata"),
        ("mp4", [{"type": "analyze", "metrics": ["psnr"]}], "operations[0].reference"),
        (
            "mp4",
            [{"type": "analyze", "reference": "a.mp4", "metrics": ["vmaf"]}],
            "operations[0].metrics[0]",
        ),
        (
            "mp4",
            [{"type": "analyze", "reference": "a.mp4", "metrics": ["psnr", "psnr"]}],
            "operations[0].metrics[1]",
        ),
        (
            "mp4",
            [{"type": "analyze", "reference": "a.mp4", "metrics": "psnr"}],
            "operations[0].metrics",
        ),
        (
            "mp4",
            [{"type": "analyze", "reference": 5, "metrics": ["psnr"]}],
            "operations[0].reference",
        ),
        (
            "mp4",
            [{"type": "analyze", "reference": "a\x00b", "metrics": ["psnr"]}],
            "operations[0].reference",
        ),
        ("mp4", [{"type": "analyze", "reference": "a.mp4"}], "operations[0].metrics"),
        ("mp4", [{"type": "analyze", "metadata": False}], "operations[0]"),
        # the field path points at the right operation
        ("mp4", [{"type": "trim", "start": 1}, T(crf=99)], "operations[1].crf"),
    ],
)
def test_rejected(output, ops, field):
    rejects(output, ops, field)


def test_output_pixel_limit():
    rejects(
        "mp4", [T(width=3840, height=2160)], "operations[0].width", "exceeds", max_px=1920 * 1080
    )
    rejects("mp4", [T(height=2160)], "operations[0].height", max_px=1920 * 1080)
    rejects(
        "m3u8",
        [{"type": "hls", "ladder": [{"height": 2160, "video_bitrate": "10M"}]}],
        "operations[0].ladder[0].height",
        max_px=1920 * 1080,
    )
    parse("mp4", [T(width=1920, height=1080)], max_px=1920 * 1080)
    parse("mp4", [T(width=3840, height=2160)], max_px=0)  # 0 disables the check


def test_messages_are_clear():
    err = rejects("webm", [T(video_codec="h265")], "operations[0].video_codec")
    assert "'h265' cannot be stored in 'webm'" in err.message and "vp9" in err.message
    err = rejects("mp4", [T(crf=52)], "operations[0].crf")
    assert "between 0 and 51" in err.message
    err = rejects("mp4", [T(bogus=1)], "operations[0].bogus")
    assert "unknown key 'bogus'" in err.message
    err = rejects("mp4", [{"type": "blur"}], "operations[0].type")
    assert "unknown operation type 'blur'" in err.message and "transcode" in err.message
    assert err.to_dict()["error"]["field"] == "operations[0].type"
