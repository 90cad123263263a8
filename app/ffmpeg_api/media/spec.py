"""Validation of a job's `output` format and `operations` list.

`parse_request(output_format, operations, max_output_pixels=...)` returns frozen dataclasses;
anything wrong raises `ValidationError` whose `field` names the offending value, e.g.
`operations[1].crf` or `operations[0].ladder[2].height`. Unknown keys are rejected.

Only validated numbers and enumeration members survive validation, so nothing a client
types can reach an ffmpeg command line as free text (the `analyze.reference` path is kept
as a raw string for the caller to resolve inside the storage root; the planner only uses
the resolved path it is given, never this string).

Outputs of a job (all inside the job's work directory):

* Primary output `output.<ext>` -- produced when the list contains `transcode` and/or
  `trim` and the output format is a video or audio container. `trim` narrows the primary
  output's time range and `transcode` sets its codecs; with `trim` alone the container's
  default codecs are used. For an audio-only container (mp3, m4a, aac, wav, ogg, flac)
  video is dropped and video settings are refused.
* Output `m3u8` (alias `hls`) requires an `hls` operation, which then is the primary
  output (`master.m3u8`); `trim`, if present, applies to it; `transcode` is refused.
* Output `jpg`/`png` requires a `thumbnail` operation (its format defaults to the output
  format); the first thumbnail is the primary output; `transcode`/`trim` are refused.
* `thumbnail` -> `thumb_001.<jpg|png>`...; `hls` -> `master.m3u8`, `v<N>/index.m3u8`,
  `v<N>/seg_<NNNNN>.ts`; `extract_audio` -> `audio.<ext>`; `analyze` -> `analysis.json`.
  These are produced from the whole input regardless of `trim` (except HLS when primary).
* If there is neither `transcode` nor `trim` (nor an `hls` primary) there is no primary
  output: e.g. a thumbnail-only or analyze-only job with output `mp4` just produces its
  side outputs.

Each operation type may appear at most once; 1 to 10 operations.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from ffmpeg_api.errors import ValidationError

# --------------------------------------------------------------------------- constants

#: Allowed output formats -> ffmpeg muxer name.
OUTPUT_FORMATS: dict[str, str] = {
    "mp4": "mp4",
    "mkv": "matroska",
    "webm": "webm",
    "mov": "mov",
    "mp3": "mp3",
    "m4a": "ipod",
    "aac": "adts",
    "wav": "wav",
    "ogg": "ogg",
    "flac": "flac",
    "jpg": "image2",
    "png": "image2",
    "m3u8": "hls",
}
FORMAT_ALIASES = {"hls": "m3u8", "jpeg": "jpg", "matroska": "mkv"}

VIDEO_CONTAINERS = frozenset({"mp4", "mkv", "webm", "mov"})
AUDIO_CONTAINERS = frozenset({"mp3", "m4a", "aac", "wav", "ogg", "flac"})
IMAGE_FORMATS = frozenset({"jpg", "png"})

VIDEO_CODECS = ("h264", "h265", "vp9", "av1")
#: Codec name -> (CPU encoder, GPU encoder or None when the GPU path falls back to CPU).
VIDEO_ENCODERS: dict[str, tuple[str, str | None]] = {
    "h264": ("libx264", "h264_nvenc"),
    "h265": ("libx265", "hevc_nvenc"),
    "vp9": ("libvpx-vp9", None),
    "av1": ("libsvtav1", "av1_nvenc"),
}
#: Inclusive CRF range per codec.
CRF_RANGE: dict[str, tuple[int, int]] = {
    "h264": (0, 51),
    "h265": (0, 51),
    "vp9": (0, 63),
    "av1": (1, 63),
}
X26X_PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
)
VP9_DEADLINES = ("realtime", "good", "best")
SVTAV1_PRESETS = tuple(range(14))

#: Transcode audio codecs -> encoder ("copy"/"none" are handled specially).
AUDIO_CODECS: dict[str, str | None] = {
    "aac": "aac",
    "opus": "libopus",
    "mp3": "libmp3lame",
    "vorbis": "libvorbis",
    "flac": "flac",
    "pcm": "pcm_s16le",
    "copy": None,
    "none": None,
}

#: Which codecs each container accepts (first entry is the default).
CONTAINER_VIDEO: dict[str, tuple[str, ...]] = {
    "mp4": ("h264", "h265", "vp9", "av1"),
    "mov": ("h264", "h265"),
    "mkv": ("h264", "h265", "vp9", "av1"),
    "webm": ("vp9", "av1"),
}
CONTAINER_AUDIO: dict[str, tuple[str, ...]] = {
    "mp4": ("aac", "mp3", "opus"),
    "mov": ("aac", "mp3", "pcm"),
    "mkv": ("aac", "opus", "mp3", "vorbis", "flac", "pcm"),
    "webm": ("opus", "vorbis"),
    "mp3": ("mp3",),
    "m4a": ("aac",),
    "aac": ("aac",),
    "wav": ("pcm",),
    "ogg": ("opus", "vorbis", "flac"),
    "flac": ("flac",),
}

#: extract_audio codec -> (encoder, muxer, file extension, takes a bitrate)
EXTRACT_AUDIO_CODECS: dict[str, tuple[str, str, str, bool]] = {
    "aac": ("aac", "ipod", "m4a", True),
    "mp3": ("libmp3lame", "mp3", "mp3", True),
    "opus": ("libopus", "ogg", "opus", True),
    "flac": ("flac", "flac", "flac", False),
    "wav": ("pcm_s16le", "wav", "wav", False),
}

THUMBNAIL_FORMATS = ("jpg", "png")
MAX_OPERATIONS = 10
MAX_THUMBNAILS = 100
MAX_RENDITIONS = 6
MAX_DIMENSION = 8192
MIN_DIMENSION = 16
VIDEO_BITRATE_RANGE = (16_000, 200_000_000)
AUDIO_BITRATE_RANGE = (8_000, 512_000)
DEFAULT_HLS_AUDIO_BITRATE = 128_000
METRICS = ("psnr", "ssim")

_BITRATE_RE = re.compile(r"^([0-9]{1,9})(?:\.([0-9]{1,3}))?([kKmM]?)$")
_TIMECODE_RE = re.compile(r"^(?:([0-9]{1,3}):)?([0-5]?[0-9]):([0-5]?[0-9](?:\.[0-9]{1,6})?)$")


# --------------------------------------------------------------------------- helpers


def normalize_output_format(value: Any, field: str = "output") -> str:
    if not isinstance(value, str) or not value:
        raise ValidationError("output must be a format name string", field=field)
    fmt = value.strip().lower().lstrip(".")
    fmt = FORMAT_ALIASES.get(fmt, fmt)
    if fmt not in OUTPUT_FORMATS:
        raise ValidationError(
            f"unknown output format {value!r}; allowed: {', '.join(OUTPUT_FORMATS)}",
            field=field,
        )
    return fmt


def parse_bitrate(value: Any, field: str, lo: int, hi: int) -> int:
    """'2M', '800k', '128000' or a positive integer -> bits per second."""
    if isinstance(value, bool):
        raise ValidationError("bitrate must be a string like '800k' or '2M'", field=field)
    if isinstance(value, int):
        bps = value
    elif isinstance(value, str):
        m = _BITRATE_RE.match(value.strip())
        if not m:
            raise ValidationError(
                f"invalid bitrate {value!r}; use e.g. '800k', '2M' or bits per second",
                field=field,
            )
        whole, frac, unit = m.groups()
        mult = {"": 1, "k": 1000, "m": 1_000_000}[unit.lower()]
        bps = int(whole) * mult + (int((frac or "0").ljust(3, "0")) * mult) // 1000
    else:
        raise ValidationError("bitrate must be a string like '800k' or '2M'", field=field)
    if not lo <= bps <= hi:
        raise ValidationError(f"bitrate must be between {lo} and {hi} bits/s", field=field)
    return bps


def parse_time(value: Any, field: str) -> float:
    """Seconds (number >= 0) or 'HH:MM:SS.mmm' / 'MM:SS' -> float seconds."""
    if isinstance(value, bool):
        raise ValidationError("time must be seconds or 'HH:MM:SS.mmm'", field=field)
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        m = _TIMECODE_RE.match(value.strip())
        if not m:
            raise ValidationError(
                f"invalid time {value!r}; use seconds or 'HH:MM:SS.mmm'", field=field
            )
        h, mnt, s = m.groups()
        seconds = int(h or 0) * 3600 + int(mnt) * 60 + float(s)
    else:
        raise ValidationError("time must be seconds or 'HH:MM:SS.mmm'", field=field)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValidationError("time must be a finite number >= 0", field=field)
    return round(seconds, 6)


def _int(value: Any, field: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError("must be an integer", field=field)
    if not lo <= value <= hi:
        raise ValidationError(f"must be between {lo} and {hi}", field=field)
    return value


def _number(value: Any, field: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError("must be a number", field=field)
    value = float(value)
    if not math.isfinite(value) or not lo <= value <= hi:
        raise ValidationError(f"must be between {lo:g} and {hi:g}", field=field)
    return value


def _bool(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise ValidationError("must be a boolean", field=field)
    return value


def _enum(value: Any, field: str, allowed) -> str:
    if not isinstance(value, str) or value.lower() not in allowed:
        raise ValidationError(
            f"invalid value {value!r}; allowed: {', '.join(map(str, allowed))}", field=field
        )
    return value.lower()


def _dimension(value: Any, field: str) -> int:
    v = _int(value, field, MIN_DIMENSION, MAX_DIMENSION)
    if v % 2:
        raise ValidationError("must be an even number", field=field)
    return v


def _check_keys(obj: dict, allowed: set[str], path: str) -> None:
    for key in obj:
        if key not in allowed:
            raise ValidationError(
                f"unknown key {key!r}; allowed: {', '.join(sorted(allowed))}",
                field=f"{path}.{key}" if isinstance(key, str) else path,
            )


def _estimate_pixels(width: int | None, height: int | None) -> int:
    """Output pixels for a request; a missing side is estimated with a 16:9 aspect."""
    if width and height:
        return width * height
    if height:
        return height * (height * 16 // 9)
    if width:
        return width * (width * 9 // 16)
    return 0


def _check_pixels(width, height, max_output_pixels: int, field: str) -> None:
    px = _estimate_pixels(width, height)
    if max_output_pixels and px > max_output_pixels:
        raise ValidationError(
            f"requested output frame (~{px} pixels) exceeds the limit of {max_output_pixels}",
            field=field,
        )


def format_bitrate(bps: int) -> str:
    """Bits per second -> the compact form ffmpeg accepts ('2M', '800k', '12345')."""
    if bps % 1_000_000 == 0:
        return f"{bps // 1_000_000}M"
    if bps % 1000 == 0:
        return f"{bps // 1000}k"
    return str(bps)


# --------------------------------------------------------------------------- operations


class Operation:
    type: ClassVar[str] = ""

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"type": self.type}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if value is None:
                continue
            if isinstance(value, tuple):
                value = [v.to_dict() if hasattr(v, "to_dict") else v for v in value]
            out[f.name] = value
        return out


@dataclass(frozen=True)
class Transcode(Operation):
    type: ClassVar[str] = "transcode"
    video_codec: str | None = None
    crf: int | None = None
    video_bitrate: int | None = None  # bits/s
    preset: str | None = None  # x264/x265 name, svtav1 "0".."13", vp9 deadline
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    audio_codec: str | None = None
    audio_bitrate: int | None = None  # bits/s


@dataclass(frozen=True)
class Trim(Operation):
    type: ClassVar[str] = "trim"
    start: float = 0.0
    end: float | None = None
    duration: float | None = None

    def window(self, input_duration: float | None = None) -> tuple[float, float | None]:
        """(start, length or None for "to the end") clipped to the input's duration."""
        if self.end is not None:
            end = self.end
        elif self.duration is not None:
            end = self.start + self.duration
        else:
            return self.start, None
        if input_duration:
            end = min(end, input_duration)
        return self.start, round(end - self.start, 6)


@dataclass(frozen=True)
class Thumbnail(Operation):
    type: ClassVar[str] = "thumbnail"
    at: tuple[float, ...] | None = None
    count: int | None = None
    interval: float | None = None
    width: int | None = None
    format: str = "jpg"

    def times(self, duration: float) -> list[float]:
        """Timestamps to grab for an input of `duration` seconds."""
        duration = max(0.0, duration or 0.0)
        if self.at is not None:
            return list(self.at)
        if self.count is not None:
            step = duration / self.count
            return [round(step * (k + 0.5), 3) for k in range(self.count)]
        assert self.interval is not None
        out, t = [], 0.0
        while (t < duration or not out) and len(out) < MAX_THUMBNAILS:
            out.append(round(t, 3))
            t += self.interval
        return out


@dataclass(frozen=True)
class Rendition:
    height: int
    video_bitrate: int
    audio_bitrate: int = DEFAULT_HLS_AUDIO_BITRATE

    def to_dict(self) -> dict:
        return {
            "height": self.height,
            "video_bitrate": self.video_bitrate,
            "audio_bitrate": self.audio_bitrate,
        }


@dataclass(frozen=True)
class Hls(Operation):
    type: ClassVar[str] = "hls"
    ladder: tuple[Rendition, ...] = ()
    segment_duration: float = 6.0


@dataclass(frozen=True)
class ExtractAudio(Operation):
    type: ClassVar[str] = "extract_audio"
    codec: str = "aac"
    bitrate: int | None = None


@dataclass(frozen=True)
class Analyze(Operation):
    type: ClassVar[str] = "analyze"
    metadata: bool = True
    reference: str | None = None
    metrics: tuple[str, ...] = ()


# --------------------------------------------------------------------------- parsers


def _parse_transcode(obj: dict, path: str, fmt: str, max_px: int) -> Transcode:
    _check_keys(
        obj,
        {
            "type",
            "video_codec",
            "crf",
            "video_bitrate",
            "preset",
            "width",
            "height",
            "fps",
            "audio_codec",
            "audio_bitrate",
        },
        path,
    )
    audio_only = fmt in AUDIO_CONTAINERS
    if fmt not in VIDEO_CONTAINERS and not audio_only:
        raise ValidationError(
            f"transcode is not possible with output format {fmt!r}", field=f"{path}.type"
        )
    if audio_only:
        for key in ("video_codec", "crf", "video_bitrate", "preset", "width", "height", "fps"):
            if obj.get(key) is not None:
                raise ValidationError(
                    f"output format {fmt!r} is audio-only; {key} is not allowed",
                    field=f"{path}.{key}",
                )
    vcodec = None
    if not audio_only:
        vcodec = CONTAINER_VIDEO[fmt][0]
        if obj.get("video_codec") is not None:
            vcodec = _enum(obj["video_codec"], f"{path}.video_codec", VIDEO_CODECS)
            if vcodec not in CONTAINER_VIDEO[fmt]:
                raise ValidationError(
                    f"video codec {vcodec!r} cannot be stored in {fmt!r}; "
                    f"use one of {', '.join(CONTAINER_VIDEO[fmt])}",
                    field=f"{path}.video_codec",
                )
    crf = bitrate = preset = width = height = fps = None
    if obj.get("crf") is not None and obj.get("video_bitrate") is not None:
        raise ValidationError("crf and video_bitrate are mutually exclusive", field=f"{path}.crf")
    if obj.get("crf") is not None:
        lo, hi = CRF_RANGE[vcodec]
        crf = _int(obj["crf"], f"{path}.crf", lo, hi)
    if obj.get("video_bitrate") is not None:
        bitrate = parse_bitrate(obj["video_bitrate"], f"{path}.video_bitrate", *VIDEO_BITRATE_RANGE)
    if obj.get("preset") is not None:
        preset = _parse_preset(obj["preset"], vcodec, f"{path}.preset")
    if obj.get("width") is not None:
        width = _dimension(obj["width"], f"{path}.width")
    if obj.get("height") is not None:
        height = _dimension(obj["height"], f"{path}.height")
    _check_pixels(width, height, max_px, f"{path}.{'width' if width else 'height'}")
    if obj.get("fps") is not None:
        fps = round(_number(obj["fps"], f"{path}.fps", 1, 120), 3)
    acodec = CONTAINER_AUDIO[fmt][0]
    if obj.get("audio_codec") is not None:
        acodec = _enum(obj["audio_codec"], f"{path}.audio_codec", tuple(AUDIO_CODECS))
        if acodec == "none" and audio_only:
            raise ValidationError(
                f"output format {fmt!r} is audio-only; audio_codec cannot be 'none'",
                field=f"{path}.audio_codec",
            )
        if acodec not in ("copy", "none") and acodec not in CONTAINER_AUDIO[fmt]:
            raise ValidationError(
                f"audio codec {acodec!r} cannot be stored in {fmt!r}; "
                f"use one of {', '.join(CONTAINER_AUDIO[fmt])}",
                field=f"{path}.audio_codec",
            )
    abitrate = None
    if obj.get("audio_bitrate") is not None:
        if acodec in ("copy", "none", "flac", "pcm"):
            raise ValidationError(
                f"audio_bitrate does not apply to audio codec {acodec!r}",
                field=f"{path}.audio_bitrate",
            )
        abitrate = parse_bitrate(
            obj["audio_bitrate"], f"{path}.audio_bitrate", *AUDIO_BITRATE_RANGE
        )
    return Transcode(
        video_codec=vcodec,
        crf=crf,
        video_bitrate=bitrate,
        preset=preset,
        width=width,
        height=height,
        fps=fps,
        audio_codec=acodec,
        audio_bitrate=abitrate,
    )


def _parse_preset(value: Any, vcodec: str, field: str) -> str:
    if vcodec in ("h264", "h265"):
        return _enum(value, field, X26X_PRESETS)
    if vcodec == "vp9":
        return _enum(value, field, VP9_DEADLINES)
    # av1 (SVT-AV1): 0 (slowest) .. 13 (fastest), as a number or a numeric string
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    return str(_int(value, field, 0, 13))


def _parse_trim(obj: dict, path: str) -> Trim:
    _check_keys(obj, {"type", "start", "end", "duration"}, path)
    start = parse_time(obj.get("start", 0), f"{path}.start")
    end = duration = None
    if obj.get("end") is not None and obj.get("duration") is not None:
        raise ValidationError("give either end or duration, not both", field=f"{path}.duration")
    if obj.get("end") is not None:
        end = parse_time(obj["end"], f"{path}.end")
        if end <= start:
            raise ValidationError("end must be greater than start", field=f"{path}.end")
    if obj.get("duration") is not None:
        duration = parse_time(obj["duration"], f"{path}.duration")
        if duration <= 0:
            raise ValidationError("duration must be greater than 0", field=f"{path}.duration")
    return Trim(start=start, end=end, duration=duration)


def _parse_thumbnail(obj: dict, path: str, fmt: str, max_px: int) -> Thumbnail:
    _check_keys(obj, {"type", "at", "count", "interval", "width", "format"}, path)
    given = [k for k in ("at", "count", "interval") if obj.get(k) is not None]
    if len(given) != 1:
        raise ValidationError(
            "give exactly one of at, count or interval",
            field=f"{path}.{given[-1] if given else 'at'}",
        )
    at = count = interval = width = None
    if obj.get("at") is not None:
        raw = obj["at"]
        if not isinstance(raw, list) or not raw:
            raise ValidationError("must be a non-empty list of times", field=f"{path}.at")
        if len(raw) > MAX_THUMBNAILS:
            raise ValidationError(f"at most {MAX_THUMBNAILS} times", field=f"{path}.at")
        at = tuple(parse_time(v, f"{path}.at[{i}]") for i, v in enumerate(raw))
    if obj.get("count") is not None:
        count = _int(obj["count"], f"{path}.count", 1, MAX_THUMBNAILS)
    if obj.get("interval") is not None:
        interval = _number(obj["interval"], f"{path}.interval", 0.1, 86400)
    if obj.get("width") is not None:
        width = _dimension(obj["width"], f"{path}.width")
        _check_pixels(width, None, max_px, f"{path}.width")
    default_format = fmt if fmt in IMAGE_FORMATS else "jpg"
    tfmt = default_format
    if obj.get("format") is not None:
        tfmt = FORMAT_ALIASES.get(str(obj["format"]).lower(), obj["format"])
        tfmt = _enum(tfmt, f"{path}.format", THUMBNAIL_FORMATS)
    return Thumbnail(at=at, count=count, interval=interval, width=width, format=tfmt)


def _parse_hls(obj: dict, path: str, max_px: int) -> Hls:
    _check_keys(obj, {"type", "ladder", "segment_duration"}, path)
    ladder = obj.get("ladder")
    if not isinstance(ladder, list) or not ladder:
        raise ValidationError(
            "ladder must be a non-empty list of renditions", field=f"{path}.ladder"
        )
    if len(ladder) > MAX_RENDITIONS:
        raise ValidationError(f"at most {MAX_RENDITIONS} renditions", field=f"{path}.ladder")
    renditions = []
    for i, r in enumerate(ladder):
        rpath = f"{path}.ladder[{i}]"
        if not isinstance(r, dict):
            raise ValidationError("rendition must be an object", field=rpath)
        _check_keys(r, {"height", "video_bitrate", "audio_bitrate"}, rpath)
        if r.get("height") is None:
            raise ValidationError("height is required", field=f"{rpath}.height")
        if r.get("video_bitrate") is None:
            raise ValidationError("video_bitrate is required", field=f"{rpath}.video_bitrate")
        height = _dimension(r["height"], f"{rpath}.height")
        _check_pixels(None, height, max_px, f"{rpath}.height")
        vb = parse_bitrate(r["video_bitrate"], f"{rpath}.video_bitrate", *VIDEO_BITRATE_RANGE)
        ab = DEFAULT_HLS_AUDIO_BITRATE
        if r.get("audio_bitrate") is not None:
            ab = parse_bitrate(r["audio_bitrate"], f"{rpath}.audio_bitrate", *AUDIO_BITRATE_RANGE)
        renditions.append(Rendition(height=height, video_bitrate=vb, audio_bitrate=ab))
    seg = 6.0
    if obj.get("segment_duration") is not None:
        seg = _number(obj["segment_duration"], f"{path}.segment_duration", 2, 10)
    return Hls(ladder=tuple(renditions), segment_duration=seg)


def _parse_extract_audio(obj: dict, path: str) -> ExtractAudio:
    _check_keys(obj, {"type", "codec", "bitrate"}, path)
    codec = "aac"
    if obj.get("codec") is not None:
        codec = _enum(obj["codec"], f"{path}.codec", tuple(EXTRACT_AUDIO_CODECS))
    bitrate = None
    if obj.get("bitrate") is not None:
        if not EXTRACT_AUDIO_CODECS[codec][3]:
            raise ValidationError(
                f"bitrate does not apply to lossless codec {codec!r}", field=f"{path}.bitrate"
            )
        bitrate = parse_bitrate(obj["bitrate"], f"{path}.bitrate", *AUDIO_BITRATE_RANGE)
    return ExtractAudio(codec=codec, bitrate=bitrate)


def _parse_analyze(obj: dict, path: str) -> Analyze:
    _check_keys(obj, {"type", "metadata", "reference", "metrics"}, path)
    metadata = True
    if obj.get("metadata") is not None:
        metadata = _bool(obj["metadata"], f"{path}.metadata")
    reference = obj.get("reference")
    if reference is not None:
        if (
            not isinstance(reference, str)
            or not reference.strip()
            or len(reference) > 4096
            or "\x00" in reference
        ):
            raise ValidationError(
                "reference must be a non-empty path string", field=f"{path}.reference"
            )
    metrics: list[str] = []
    raw = obj.get("metrics")
    if raw is not None:
        if not isinstance(raw, list):
            raise ValidationError("metrics must be a list", field=f"{path}.metrics")
        for i, m in enumerate(raw):
            value = _enum(m, f"{path}.metrics[{i}]", METRICS)
            if value in metrics:
                raise ValidationError(f"duplicate metric {value!r}", field=f"{path}.metrics[{i}]")
            metrics.append(value)
    if metrics and reference is None:
        raise ValidationError("metrics require a reference file", field=f"{path}.reference")
    if reference is not None and not metrics:
        raise ValidationError(
            "a reference is only used with metrics ('psnr', 'ssim')", field=f"{path}.metrics"
        )
    if not metadata and not metrics:
        raise ValidationError("nothing to analyze: enable metadata or request metrics", field=path)
    return Analyze(metadata=metadata, reference=reference, metrics=tuple(metrics))


def parse_request(
    output_format: str, operations: list, *, max_output_pixels: int
) -> list[Operation]:
    """Validate `output` + `operations`; see the module docstring for the rules."""
    fmt = normalize_output_format(output_format)
    if not isinstance(operations, list):
        raise ValidationError("operations must be a list", field="operations")
    if not operations:
        raise ValidationError("at least one operation is required", field="operations")
    if len(operations) > MAX_OPERATIONS:
        raise ValidationError(f"at most {MAX_OPERATIONS} operations", field="operations")
    result: list[Operation] = []
    seen: set[str] = set()
    for i, obj in enumerate(operations):
        path = f"operations[{i}]"
        if not isinstance(obj, dict):
            raise ValidationError("operation must be an object with a 'type'", field=path)
        op_type = obj.get("type")
        if not isinstance(op_type, str) or op_type not in _PARSERS:
            raise ValidationError(
                f"unknown operation type {op_type!r}; allowed: {', '.join(_PARSERS)}",
                field=f"{path}.type",
            )
        if op_type in seen:
            raise ValidationError(
                f"only one {op_type!r} operation is allowed", field=f"{path}.type"
            )
        seen.add(op_type)
        if op_type == "transcode":
            op: Operation = _parse_transcode(obj, path, fmt, max_output_pixels)
        elif op_type == "trim":
            op = _parse_trim(obj, path)
        elif op_type == "thumbnail":
            op = _parse_thumbnail(obj, path, fmt, max_output_pixels)
        elif op_type == "hls":
            op = _parse_hls(obj, path, max_output_pixels)
        elif op_type == "extract_audio":
            op = _parse_extract_audio(obj, path)
        else:
            op = _parse_analyze(obj, path)
        result.append(op)

    def index(t: str) -> int:
        return next(i for i, o in enumerate(result) if o.type == t)

    if fmt == "m3u8":
        if "hls" not in seen:
            raise ValidationError("output 'm3u8' requires an 'hls' operation", field="output")
        if "transcode" in seen:
            raise ValidationError(
                "output 'm3u8' takes its codecs from the hls ladder; remove 'transcode'",
                field=f"operations[{index('transcode')}].type",
            )
    if fmt in IMAGE_FORMATS:
        if "thumbnail" not in seen:
            raise ValidationError(
                f"output {fmt!r} requires a 'thumbnail' operation", field="output"
            )
        if "trim" in seen:
            raise ValidationError(
                f"trim is not possible with output format {fmt!r}",
                field=f"operations[{index('trim')}].type",
            )
    return result


_PARSERS = ("transcode", "trim", "thumbnail", "hls", "extract_audio", "analyze")


def operations_from_dicts(output_format: str, dicts: list[dict], **kw) -> list[Operation]:
    """Rebuild operations from stored `to_dict()` output (bitrates are stored as ints)."""
    kw.setdefault("max_output_pixels", 0)
    return parse_request(output_format, dicts, **kw)
