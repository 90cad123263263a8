"""NVENC availability, decided by actually opening each encoder on one tiny frame.

`ffmpeg -encoders` only says what was compiled in, not whether a driver/GPU is usable, so
each of h264_nvenc, hevc_nvenc and av1_nvenc gets a one-frame test encode. Results are
cached per (ffmpeg_bin, device) for the life of the process; `clear_cache()` resets.
"""

from __future__ import annotations

import re
import subprocess
import threading
from dataclasses import dataclass

_CONTEXT_RE = re.compile(r"^\[[^\]]*@ 0x[0-9a-f]+\]\s*")
NVENC_ENCODERS = ("h264_nvenc", "hevc_nvenc", "av1_nvenc")


@dataclass(frozen=True)
class GpuProbe:
    available: bool
    encoders: tuple[str, ...]
    reason: str


_cache: dict[tuple[str, str], GpuProbe] = {}
_lock = threading.Lock()


def clear_cache() -> None:
    with _lock:
        _cache.clear()


def _test_encode(ffmpeg_bin: str, encoder: str, device: str, timeout: float) -> str | None:
    """None if the encoder opened and encoded a frame, else the error text."""
    argv = [
        ffmpeg_bin,
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-f",
        "lavfi",
        "-i",
        "color=black:s=256x256:d=0.04",
        "-frames:v",
        "1",
        "-c:v",
        encoder,
        "-gpu",
        device,
        "-f",
        "null",
        "-",
    ]
    try:
        proc = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False
        )
    except FileNotFoundError:
        return f"ffmpeg binary not found: {ffmpeg_bin}"
    except subprocess.TimeoutExpired:
        return f"test encode timed out after {timeout:g} s"
    if proc.returncode == 0:
        return None
    lines = [ln.strip() for ln in proc.stderr.decode("utf-8", "replace").splitlines()]
    lines = [ln for ln in lines if ln and "Conversion failed" not in ln]
    # the first error line names the cause ("Cannot load libcuda.so.1", "Unknown encoder")
    line = _CONTEXT_RE.sub("", lines[0]) if lines else f"exit status {proc.returncode}"
    return line[:300]


def probe_gpu(*, ffmpeg_bin: str = "ffmpeg", device: str = "0", timeout: float = 15) -> GpuProbe:
    """Which NVENC encoders work on `device`; `available` is true if any does."""
    device = str(device)
    key = (ffmpeg_bin, device)
    with _lock:
        cached = _cache.get(key)
        if cached is not None:
            return cached
        if not device.isdigit():
            result = GpuProbe(False, (), f"invalid GPU device {device!r}")
        else:
            working: list[str] = []
            failures: list[str] = []
            for encoder in NVENC_ENCODERS:
                error = _test_encode(ffmpeg_bin, encoder, device, timeout)
                if error is None:
                    working.append(encoder)
                else:
                    failures.append(f"{encoder}: {error}")
            result = GpuProbe(bool(working), tuple(working), "; ".join(failures))
        _cache[key] = result
        return result
