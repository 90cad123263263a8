"""The scratch copy an s3 upload is probed from: its head and tail at their offsets, a hole
between. Real ffprobe on real files whose index is at the end (MP4's moov, Matroska's cues)
must read the same streams and duration from it as from the whole file."""

from __future__ import annotations

import io

import pytest
from helpers import lavfi_clip

from ffmpeg_api import mediastore
from ffmpeg_api.media import probe as media_probe


def test_head_and_tail_are_kept_at_their_offsets(tmp_path, monkeypatch):
    monkeypatch.setattr(mediastore, "PROBE_HEAD", 10)
    monkeypatch.setattr(mediastore, "PROBE_TAIL", 8)
    data = bytes(range(256)) * 4
    source = io.BytesIO(data)
    with open(tmp_path / "copy", "w+b") as out:
        kept = mediastore._ProbeCopy(source, out)
        read = b"".join(iter(lambda: kept.read(7), b""))
        kept.finish()
    assert read == data  # the stream itself is passed on untouched
    copy = (tmp_path / "copy").read_bytes()
    assert len(copy) == len(data)
    assert copy[:10] == data[:10]
    assert copy[-8:] == data[-8:]
    assert copy[10 : len(data) - 16] == bytes(len(data) - 26)  # the hole reads as zeros


def test_a_short_stream_is_copied_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(mediastore, "PROBE_HEAD", 100)
    monkeypatch.setattr(mediastore, "PROBE_TAIL", 100)
    data = b"x" * 150
    with open(tmp_path / "copy", "w+b") as out:
        kept = mediastore._ProbeCopy(io.BytesIO(data), out)
        while kept.read(16):
            pass
        kept.finish()
    assert (tmp_path / "copy").read_bytes() == data


@pytest.mark.parametrize("container", ["mp4", "mkv"])
def test_ffprobe_reads_the_same_from_the_sparse_copy(tmp_path, monkeypatch, container):
    path = tmp_path / f"in.{container}"
    lavfi_clip(path, size="640x272", seconds=12, tone=300)
    size = path.stat().st_size
    # Keep a fifth of the file at each end: most of it is a hole, the index is in the tail.
    monkeypatch.setattr(mediastore, "PROBE_HEAD", size // 5)
    monkeypatch.setattr(mediastore, "PROBE_TAIL", size // 5)
    copy = tmp_path / f"copy.{container}"
    with open(path, "rb") as src, open(copy, "w+b") as out:
        kept = mediastore._ProbeCopy(src, out)
        while kept.read(4096):
            pass
        kept.finish()
    assert copy.read_bytes() != path.read_bytes()
    whole = media_probe.probe(str(path))
    sparse = media_probe.probe(str(copy))
    assert (sparse.width, sparse.height, sparse.video_codec, sparse.audio_codec) == (
        whole.width,
        whole.height,
        whole.video_codec,
        whole.audio_codec,
    )
    assert sparse.duration == pytest.approx(whole.duration, abs=0.05)
    assert sparse.fps == whole.fps and sparse.size == whole.size
