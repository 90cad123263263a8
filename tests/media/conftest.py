"""Small media clips generated with lavfi, shared by the media tests of this directory."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

FFMPEG = shutil.which("ffmpeg") or "ffmpeg"


def lavfi_clip(path, *, size="320x240", rate=25, duration=3.0, audio=True, extra=()):
    argv = [FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
    argv += ["-f", "lavfi", "-i", f"testsrc2=s={size}:r={rate}:d={duration}"]
    if audio:
        argv += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:d={duration}"]
    argv += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", *extra]
    if audio:
        argv += ["-c:a", "aac", "-b:a", "96k", "-shortest"]
    argv.append(str(path))
    subprocess.run(argv, check=True, timeout=60)
    return str(path)


@pytest.fixture(scope="session")
def clips(tmp_path_factory):
    base = tmp_path_factory.mktemp("clips")
    out = {
        "av": lavfi_clip(base / "av.mp4"),
        "wide": lavfi_clip(base / "wide.mkv", size="640x360", duration=2.0),
        "silent": lavfi_clip(base / "silent.mp4", audio=False, duration=2.0),
        # the same content, heavily compressed: for PSNR/SSIM below "identical"
        "degraded": lavfi_clip(base / "degraded.mp4", extra=("-crf", "45")),
    }
    tone = base / "tone.wav"
    subprocess.run(
        [FFMPEG, "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "sine=d=2", str(tone)],
        check=True,
        timeout=60,
    )
    out["tone"] = str(tone)
    return out


@pytest.fixture
def work_dir(tmp_path):
    path = tmp_path / "work"
    os.makedirs(path)
    return str(path)
