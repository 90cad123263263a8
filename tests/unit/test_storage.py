import io
import os
import time

import pytest

from ffmpeg_api import storage
from ffmpeg_api.errors import PathError, PayloadTooLarge, ValidationError


@pytest.fixture
def root(tmp_path):
    storage.ensure_layout(str(tmp_path))
    return str(tmp_path)


def test_resolve_accepts_relative_and_absolute_paths_inside(root):
    open(os.path.join(root, "uploads", "a.mp4"), "w").close()
    assert storage.resolve(root, "uploads/a.mp4") == os.path.join(root, "uploads", "a.mp4")
    assert storage.resolve(root, os.path.join(root, "uploads/a.mp4")).endswith("uploads/a.mp4")


@pytest.mark.parametrize(
    "path", ["../etc/passwd", "/etc/passwd", "uploads/../../x", "", ".", "uploads/\x00x"]
)
def test_resolve_refuses_escapes(root, path):
    with pytest.raises(PathError):
        storage.resolve(root, path)


def test_symlink_out_of_root_is_refused(root):
    os.symlink("/etc", os.path.join(root, "uploads", "link"))
    with pytest.raises(PathError):
        storage.resolve(root, "uploads/link/passwd")


def test_save_stream_hashes_and_places_file(root):
    stored = storage.save_stream(root, "../my clip.mp4", io.BytesIO(b"x" * 3000000), 10**7)
    assert stored.size == 3000000
    assert stored.path.startswith("uploads/") and stored.path.endswith("/my_clip.mp4")
    import hashlib

    assert stored.sha256 == hashlib.sha256(b"x" * 3000000).hexdigest()
    assert os.listdir(os.path.join(root, "tmp")) == []


def test_oversized_upload_leaves_nothing(root):
    with pytest.raises(PayloadTooLarge):
        storage.save_stream(root, "big.bin", io.BytesIO(b"x" * 5000), 4000)
    assert os.listdir(os.path.join(root, "tmp")) == []
    assert os.listdir(os.path.join(root, "uploads")) == []


def test_empty_upload_and_missing_name_are_refused(root):
    with pytest.raises(ValidationError):
        storage.save_stream(root, "a.mp4", io.BytesIO(b""), 10)
    with pytest.raises(ValidationError):
        storage.save_stream(root, "..", io.BytesIO(b"x"), 10)


def test_old_tmp_entries_respect_age_and_keep_list(root):
    tmp = os.path.join(root, "tmp")
    for name in ("old.tmp", "new.tmp", "keepme"):
        open(os.path.join(tmp, name), "w").close()
    past = time.time() - 7200
    os.utime(os.path.join(tmp, "old.tmp"), (past, past))
    os.utime(os.path.join(tmp, "keepme"), (past, past))
    found = storage.old_tmp_entries(root, 3600, keep={"keepme"})
    assert [os.path.basename(p) for p in found] == ["old.tmp"]


def test_usage_reports_top_consumers(root):
    os.makedirs(os.path.join(root, "output", "job1"))
    with open(os.path.join(root, "output", "job1", "o.mp4"), "wb") as fh:
        fh.write(b"x" * 1000)
    report = storage.usage(root)
    assert report["areas"]["output"] == {"bytes": 1000, "files": 1}
    assert report["top"][0] == {"path": "output/job1", "bytes": 1000}
    assert 0 < report["free_percent"] <= 100
