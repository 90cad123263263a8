"""The `analyze` operation: metadata via ffprobe and PSNR/SSIM against a reference.

The result is JSON-safe (no NaN/Infinity): an infinite PSNR (identical frames) is reported
as `null` with `"infinite": true`. It is written to `<work_dir>/analysis.json` and returned.

    {
      "metadata": {"format": "mov,mp4,...", "duration": 4.0, "bit_rate": 123456,
                   "size": 98765, "streams": [{"index": 0, "type": "video", ...}]},
      "metrics": {"psnr": {"average": 41.2, "min": 39.0, "max": 44.1,
                           "y": ..., "u": ..., "v": ..., "infinite": false},
                  "ssim": {"all": 0.987, "db": 18.9, "y": ..., "u": ..., "v": ...}},
      "reference": {"format": ..., "duration": ..., "width": ..., "height": ...}
    }
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable
from typing import Any

from ffmpeg_api.media.plan import Step
from ffmpeg_api.media.probe import MediaInfo, probe

_PSNR_RE = re.compile(
    r"PSNR\s+y:(?P<y>\S+)\s+u:(?P<u>\S+)\s+v:(?P<v>\S+)\s+"
    r"average:(?P<average>\S+)\s+min:(?P<min>\S+)\s+max:(?P<max>\S+)"
)
_SSIM_RE = re.compile(
    r"SSIM\s+Y:(?P<y>\S+)\s+\(\S+\)\s+U:(?P<u>\S+)\s+\(\S+\)\s+V:(?P<v>\S+)\s+\(\S+\)\s+"
    r"All:(?P<all>\S+)\s+\((?P<db>\S+)\)"
)


def _finite(value: str) -> float | None:
    try:
        f = float(value)
    except ValueError:
        return None
    return round(f, 6) if math.isfinite(f) else None


def parse_metrics(stderr: str) -> dict[str, dict[str, Any]]:
    """PSNR/SSIM summaries from ffmpeg's psnr/ssim filter log lines (last one wins)."""
    out: dict[str, dict[str, Any]] = {}
    for m in _PSNR_RE.finditer(stderr):
        d: dict[str, Any] = {k: _finite(v) for k, v in m.groupdict().items()}
        d["infinite"] = m.group("average").lower() in ("inf", "+inf")
        out["psnr"] = d
    for m in _SSIM_RE.finditer(stderr):
        d = {k: _finite(v) for k, v in m.groupdict().items()}
        out["ssim"] = d
    return out


def metadata_from_info(info: MediaInfo) -> dict[str, Any]:
    """A JSON-able summary of a probed file."""
    fmt = info.raw.get("format") or {}
    streams = []
    for s in info.raw.get("streams") or []:
        entry: dict[str, Any] = {
            "index": s.get("index"),
            "type": s.get("codec_type"),
            "codec": s.get("codec_name"),
        }
        for key in ("profile", "pix_fmt", "sample_fmt", "channel_layout"):
            if s.get(key) is not None:
                entry[key] = s[key]
        for key in ("width", "height", "channels"):
            if isinstance(s.get(key), int):
                entry[key] = s[key]
        for key, cast in (("sample_rate", int), ("bit_rate", int), ("duration", float)):
            try:
                if s.get(key) is not None:
                    value = cast(float(s[key])) if cast is int else float(s[key])
                    if isinstance(value, float) and not math.isfinite(value):
                        continue
                    entry[key] = value
            except (TypeError, ValueError):
                pass
        if s.get("codec_type") == "video":
            num, _, den = str(s.get("avg_frame_rate") or "").partition("/")
            try:
                entry["fps"] = round(int(num) / int(den), 3) if int(den) else None
            except ValueError:
                entry["fps"] = None
        streams.append(entry)
    return {
        "format": info.format_name,
        "format_long_name": fmt.get("format_long_name"),
        "duration": round(info.duration, 6),
        "bit_rate": info.bit_rate,
        "size": info.size,
        "width": info.width,
        "height": info.height,
        "fps": info.fps,
        "video_codec": info.video_codec,
        "audio_codec": info.audio_codec,
        "streams": streams,
    }


def run_analysis(
    step: Step,
    *,
    ffprobe_bin: str = "ffprobe",
    on_progress: Callable[[float, float | None], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    timeout: float = 3600.0,
    poll_interval: float = 0.5,
    stderr_lines: int = 200,
):
    """Run an analyze step; return (StepResult, analysis dict) and write analysis.json."""
    from ffmpeg_api.media.runner import FFmpegFailed, StepResult, run_step

    details = step.analyze or {}
    analysis: dict[str, Any] = {}
    result = StepResult(0, "", 0.0)
    guard = int(details.get("max_input_pixels") or 0)
    if details.get("metadata", True):
        info = probe(
            details["input_path"],
            ffprobe_bin=ffprobe_bin,
            timeout=min(timeout, 60),
            max_pixels=guard,
        )
        analysis["metadata"] = metadata_from_info(info)
    metrics = details.get("metrics") or []
    if metrics:
        ref = probe(
            details["reference_path"],
            ffprobe_bin=ffprobe_bin,
            timeout=min(timeout, 60),
            max_pixels=guard,
        )
        if not ref.has_video:
            from ffmpeg_api.errors import InputRejected

            raise InputRejected("the reference has no video stream")
        analysis["reference"] = {
            "format": ref.format_name,
            "duration": round(ref.duration, 6),
            "width": ref.width,
            "height": ref.height,
        }
        result = run_step(
            step,
            on_progress=on_progress,
            should_cancel=should_cancel,
            timeout=timeout,
            poll_interval=poll_interval,
            stderr_lines=stderr_lines,
        )
        values = parse_metrics(result.stderr_tail)
        missing = [m for m in metrics if m not in values]
        if missing:
            raise FFmpegFailed(
                f"ffmpeg reported no {', '.join(missing)} result", result.stderr_tail, 0
            )
        analysis["metrics"] = {m: values[m] for m in metrics}
    elif on_progress is not None:
        on_progress(1.0, None)
    path = os.path.join(step.work_dir, "analysis.json")
    os.makedirs(step.work_dir, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(analysis, fh, indent=2, allow_nan=False)
    os.replace(tmp, path)
    return result, analysis
