"""ffprobe of client media, restricted to local files and a whitelist of plain demuxers.

Every ffprobe/ffmpeg invocation that opens client media passes `whitelist_args()` before
its `-i`: `-protocol_whitelist file` (no network, no pipes, no nested protocols) and
`-format_whitelist` of single-file demuxers. Playlist/reference demuxers (hls, concat,
dash, ffconcat, image sequences via pattern, ...) are absent, so a playlist naming
`/etc/passwd` or a URL is refused by ffmpeg itself ("Format not on whitelist").
Paths are passed as `file:<absolute path>` so a name can never be read as an option or a
protocol.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from dataclasses import dataclass, field
from typing import Any

from ffmpeg_api.errors import InputRejected

#: Demuxer names accepted for client media (matched by ffmpeg against each demuxer's
#: comma-separated name list, e.g. "mov" matches "mov,mp4,m4a,3gp,3g2,mj2").
INPUT_FORMAT_WHITELIST: tuple[str, ...] = (
    "mov",
    "mp4",
    "m4a",
    "3gp",
    "3g2",
    "mj2",
    "matroska",
    "webm",
    "avi",
    "flv",
    "mpegts",
    "mpeg",
    "mp3",
    "wav",
    "ogg",
    "flac",
    "aac",
    "asf",
    "image2",
    "png_pipe",
    "jpeg_pipe",
    "webp_pipe",
    "bmp_pipe",
    "mjpeg",
    "m4v",
    "h264",
    "hevc",
    "ivf",
    "obu",
    "w64",
    "aiff",
)
#: Demuxers that read single images (no duration).
IMAGE_DEMUXERS = frozenset({"image2", "png_pipe", "jpeg_pipe", "webp_pipe", "bmp_pipe"})


def whitelist_args() -> list[str]:
    """Input options restricting what ffmpeg/ffprobe may open; place before `-i`."""
    return [
        "-protocol_whitelist",
        "file",
        "-format_whitelist",
        ",".join(INPUT_FORMAT_WHITELIST),
    ]


#: Largest value ffmpeg's -max_pixels takes.
_MAX_PIXELS_OPTION = 2**31 - 1
#: Decoders count a picture with its width rounded up to their row alignment (at most 64).
_DECODER_ROW_ALIGN = 64


def decoder_max_pixels(max_pixels: int) -> int:
    """The `-max_pixels` that admits every picture within `max_pixels` (width x height).

    A decoder checks its padded picture, width rounded up to 64, so the exact limit would
    refuse e.g. 330x240 under 79,200. The slack, 64 pixels per row of a square picture of the
    limit's size, is 2.2 % of 4096x2160; landscape pictures within the limit always pass.
    """
    if not max_pixels or max_pixels <= 0:
        return 0
    slack = _DECODER_ROW_ALIGN * math.isqrt(int(max_pixels))
    return min(_MAX_PIXELS_OPTION, int(max_pixels) + slack)


def decoder_guard_args(max_pixels: int) -> list[str]:
    """Input options that make every decoder of that input refuse a picture over the limit,
    including pictures after the first ones (a mid-stream resolution change); place before `-i`.
    """
    guard = decoder_max_pixels(max_pixels)
    return ["-max_pixels", str(guard)] if guard else []


def file_url(path: str) -> str:
    """An absolute path as a `file:` URL ffmpeg cannot mistake for an option/protocol."""
    return "file:" + os.path.abspath(path)


@dataclass(frozen=True)
class MediaInfo:
    duration: float
    format_name: str
    size: int
    has_video: bool
    has_audio: bool
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    video_codec: str | None = None
    audio_codec: str | None = None
    raw: dict = field(default_factory=dict, compare=False, repr=False)
    bit_rate: int | None = None
    is_image: bool = False

    @property
    def pixels(self) -> int:
        return (self.width or 0) * (self.height or 0)


def _float(value: Any) -> float | None:
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if math.isfinite(result) else None


def _rate(value: Any) -> float | None:
    if not isinstance(value, str) or "/" not in value:
        return _float(value)
    num, _, den = value.partition("/")
    n, d = _float(num), _float(den)
    if not n or not d:
        return None
    return round(n / d, 3)


def _format_allowed(format_name: str) -> bool:
    allowed = set(INPUT_FORMAT_WHITELIST)
    return any(part in allowed for part in format_name.split(","))


def last_error_line(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def probe(
    path: str, *, ffprobe_bin: str = "ffprobe", timeout: float = 30, max_pixels: int = 0
) -> MediaInfo:
    """Probe a local media file; raise `InputRejected` if it cannot or must not be used.

    `max_pixels` (MAX_INPUT_PIXELS) guards the frames ffprobe decodes to read the streams."""
    raw = probe_raw(path, ffprobe_bin=ffprobe_bin, timeout=timeout, max_pixels=max_pixels)
    return info_from_ffprobe(raw, path=path)


def probe_raw(
    path: str, *, ffprobe_bin: str = "ffprobe", timeout: float = 30, max_pixels: int = 0
) -> dict:
    """ffprobe's JSON of a local file; `InputRejected` when ffprobe cannot read it. Whether
    what it read may be used is `info_from_ffprobe`'s to decide."""
    if not os.path.isfile(path):
        raise InputRejected("input file does not exist or is not a regular file")
    argv = [
        ffprobe_bin,
        "-hide_banner",
        "-v",
        "error",
        *whitelist_args(),
        *decoder_guard_args(max_pixels),
        "-show_format",
        "-show_streams",
        "-of",
        "json",
        file_url(path),
    ]
    try:
        proc = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise InputRejected(f"probing the input took longer than {timeout:g} s") from None
    stderr = proc.stderr.decode("utf-8", "replace")
    if proc.returncode != 0:
        reason = last_error_line(stderr) or f"ffprobe exited with status {proc.returncode}"
        if "not on whitelist" in stderr:
            reason = "input format is not allowed (" + reason + ")"
        raise InputRejected(f"cannot read input media: {_strip_path(reason, path)}")
    try:
        raw = json.loads(proc.stdout.decode("utf-8", "replace") or "{}")
    except ValueError:
        raise InputRejected("cannot read input media: ffprobe returned invalid JSON") from None
    return raw


def recorded_probe(path: str, **kwargs) -> dict:
    """What an upload's record keeps of a probe: {"ffprobe": its JSON}, or {"error": why
    ffprobe could not read the file} (a file that is not media is still stored)."""
    try:
        return {"ffprobe": probe_raw(path, **kwargs)}
    except InputRejected as exc:
        return {"error": exc.message}


def _strip_path(message: str, path: str) -> str:
    """Don't echo server-side absolute paths back to clients."""
    for p in (file_url(path), os.path.abspath(path), path):
        message = message.replace(p, "<input>")
    return message


def info_from_ffprobe(raw: dict, *, path: str | None = None) -> MediaInfo:
    fmt = raw.get("format") or {}
    streams = raw.get("streams") or []
    format_name = str(fmt.get("format_name") or "")
    if not format_name or not _format_allowed(format_name):
        raise InputRejected(f"input format {format_name or 'unknown'!r} is not allowed")
    video = [
        s
        for s in streams
        if s.get("codec_type") == "video" and not (s.get("disposition") or {}).get("attached_pic")
    ]
    audio = [s for s in streams if s.get("codec_type") == "audio"]
    if not video and not audio:
        raise InputRejected("input has no audio or video stream")
    v = video[0] if video else {}
    a = audio[0] if audio else {}
    duration = _float(fmt.get("duration"))
    if duration is None:
        durations = [_float(s.get("duration")) for s in streams]
        durations = [d for d in durations if d is not None]
        duration = max(durations) if durations else None
    is_image = any(part in IMAGE_DEMUXERS for part in format_name.split(","))
    size = int(_float(fmt.get("size")) or 0)
    if not size and path and os.path.exists(path):
        size = os.path.getsize(path)
    fps = None
    if v:
        fps = _rate(v.get("avg_frame_rate")) or _rate(v.get("r_frame_rate"))
    bit_rate = _float(fmt.get("bit_rate"))
    return MediaInfo(
        duration=max(0.0, duration or 0.0),
        format_name=format_name,
        size=size,
        has_video=bool(video),
        has_audio=bool(audio),
        width=int(v["width"]) if v.get("width") else None,
        height=int(v["height"]) if v.get("height") else None,
        fps=fps,
        video_codec=v.get("codec_name"),
        audio_codec=a.get("codec_name"),
        raw=raw,
        bit_rate=int(bit_rate) if bit_rate else None,
        is_image=is_image,
    )


def check_limits(info: MediaInfo, *, max_duration: float, max_pixels: int) -> None:
    """Raise `InputRejected` if the input is longer or larger than allowed."""
    if max_duration and info.duration > max_duration:
        raise InputRejected(f"input is {info.duration:.1f} s long; the limit is {max_duration:g} s")
    if max_pixels and info.pixels > max_pixels:
        raise InputRejected(
            f"input frame is {info.width}x{info.height} ({info.pixels} pixels); "
            f"the limit is {max_pixels} pixels"
        )
    if info.has_video and not info.is_image and info.fps is not None and info.fps > 1000:
        raise InputRejected(f"input frame rate {info.fps:g} is not supported")
