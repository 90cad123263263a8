"""The storage root: confinement of client paths, streaming uploads, usage and cleanup.

Layout under STORAGE_ROOT:
  uploads/<uuid>/<name>   files clients uploaded
  output/<job id>/        a finished job's outputs (moved here atomically from tmp/)
  tmp/                    work directories of running jobs and partial uploads
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass

from .errors import PathError, PayloadTooLarge, UploadIncomplete, ValidationError

CHUNK = 1024 * 1024
SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def ensure_layout(root: str) -> None:
    for sub in ("uploads", "output", "tmp"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)


def resolve(root: str, client_path: str) -> str:
    """The real absolute path of `client_path` (relative to the root, or absolute inside it).

    realpath resolves every symlink first, so a link pointing outside the root is refused.
    """
    if not isinstance(client_path, str) or not client_path or "\x00" in client_path:
        raise PathError("path must be a non-empty string", field="input")
    real_root = os.path.realpath(root)
    candidate = client_path if os.path.isabs(client_path) else os.path.join(real_root, client_path)
    real = os.path.realpath(candidate)
    if os.path.commonpath([real, real_root]) != real_root or real == real_root:
        raise PathError("path is outside the storage root", field="input")
    return real


def relative(root: str, path: str) -> str:
    return os.path.relpath(path, os.path.realpath(root))


def hide_root(
    text: str | None, root: str, *extra_dirs: str, aliases: dict[str, str] | None = None
) -> str | None:
    """`text` (ffmpeg's stderr, an error message) with every absolute path under the storage
    root written relative to it, as clients name files: a user learns nothing of the server's
    layout. `extra_dirs` are directories under the root that may appear under another
    spelling (a job's work dir through a symlink); the root's real path is always included.
    `aliases` maps directories outside the root (a worker's WORK_DIR) to the relative name
    clients see for them."""
    if not text:
        return text
    real_root = os.path.realpath(root)
    prefixes = {}
    for directory in extra_dirs:
        for spelling in (directory, os.path.realpath(directory)):
            rel = os.path.relpath(os.path.realpath(directory), real_root)
            prefixes[spelling.rstrip("/")] = "" if rel == "." else rel
    for directory, shown in (aliases or {}).items():
        for spelling in (directory, os.path.realpath(directory)):
            prefixes[spelling.rstrip("/")] = shown
    for spelling in (root, real_root):
        prefixes[spelling.rstrip("/")] = ""
    alternatives = "|".join(re.escape(p) for p in sorted(prefixes, key=len, reverse=True) if p)
    if not alternatives:
        return text

    def relative_path(match: re.Match) -> str:
        rel = prefixes[match.group(1)]
        if match.group(2):  # a path below the prefix
            return f"{rel}/" if rel else ""
        return rel or "."

    return re.sub(rf"({alternatives})(?:(/)|(?![\w.-]))", relative_path, text)


def safe_name(name: str | None) -> str:
    base = os.path.basename(name or "")
    cleaned = SAFE_NAME.sub("_", base).strip("._")
    if not cleaned:
        raise ValidationError(
            "a file name is required (?name= or the multipart filename)", field="name"
        )
    return cleaned[:200]


@dataclass(frozen=True)
class StoredFile:
    path: str  # relative to the storage root
    size: int
    sha256: str
    version: str | None = None  # the ETag of a stored object (mediastore's `version`)


def spool(root: str):
    """An unnamed file in tmp/ for a request body being parsed (a multipart part): it counts
    on the storage root's disk, and is gone once closed or once the process dies."""
    ensure_layout(root)
    return tempfile.TemporaryFile(dir=os.path.join(root, "tmp"))


def save_stream(
    root: str, name: str, stream, max_bytes: int, budget=None, expected_size: int | None = None
) -> StoredFile:
    """Copy a stream into uploads/ chunk by chunk, hashing as it goes.

    Written to tmp/ first and renamed into place, so a failed or oversized upload leaves nothing
    behind. `budget(size_so_far, chunk_length)`, when given, is called before each chunk is
    written and raises to stop the upload (storage quota, free-space reserve).
    `expected_size` is the size the sender declared (a raw body's Content-Length): a stream
    that ends short of it is an interrupted upload, refused rather than stored as complete.
    """
    ensure_layout(root)
    name = safe_name(name)
    tmp_path = os.path.join(root, "tmp", f"upload-{uuid.uuid4().hex}.part")
    digest = hashlib.sha256()
    size = 0
    try:
        with open(tmp_path, "wb") as out:
            while True:
                chunk = stream.read(CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                if size > max_bytes:
                    raise PayloadTooLarge(f"upload exceeds the limit of {max_bytes} bytes")
                if budget is not None:
                    budget(size, len(chunk))
                digest.update(chunk)
                out.write(chunk)
        if expected_size is not None and size < expected_size:
            raise UploadIncomplete(
                f"the upload ended after {size} of the {expected_size} bytes its"
                " Content-Length declared; send it again",
                field="file",
            )
        if size == 0:
            raise ValidationError("the upload is empty", field="file")
        dest_dir = os.path.join(root, "uploads", uuid.uuid4().hex)
        os.makedirs(dest_dir)
        dest = os.path.join(dest_dir, name)
        os.replace(tmp_path, dest)
    except BaseException:
        if os.path.exists(tmp_path):
            os.unlink(tmp_path)
        raise
    return StoredFile(relative(root, dest), size, digest.hexdigest())


def disk_usage(root: str) -> dict:
    ensure_layout(root)
    return _disk_figures(root, os.path.join(root, "tmp"))


def _disk_figures(path: str, written: str) -> dict:
    """The filesystem holding `path`, and whether the service can write to `written`."""
    du = shutil.disk_usage(path)
    return {
        "total_bytes": du.total,
        "used_bytes": du.used,
        "free_bytes": du.free,
        "free_percent": round(100.0 * du.free / du.total, 2) if du.total else 0.0,
        "writable": os.access(written, os.W_OK),
    }


def tree_size(path: str) -> tuple[int, int]:
    """(bytes, files) below path, without following symlinks."""
    total = files = 0
    for dirpath, _dirs, names in os.walk(path):
        for n in names:
            try:
                st = os.lstat(os.path.join(dirpath, n))
            except FileNotFoundError:
                continue
            total += st.st_size
            files += 1
    return total, files


def usage(root: str, top: int = 20) -> dict:
    """Disk figures plus the largest entries of each area (the runbook's `du | sort | head`)."""
    result = disk_usage(root)
    areas = {}
    consumers = []
    for area in ("uploads", "output", "tmp"):
        area_path = os.path.join(root, area)
        size, files = tree_size(area_path)
        areas[area] = {"bytes": size, "files": files}
        with os.scandir(area_path) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    s, _ = tree_size(entry.path)
                else:
                    s = entry.stat(follow_symlinks=False).st_size
                consumers.append({"path": f"{area}/{entry.name}", "bytes": s})
    consumers.sort(key=lambda c: c["bytes"], reverse=True)
    result["backend"] = "local"
    result["areas"] = areas
    result["top"] = consumers[:top]
    return result


def scratch_disk_usage(scratch_dir: str) -> dict:
    """disk_usage's figures for a host's scratch directory (WORK_DIR with the s3 backend)."""
    os.makedirs(scratch_dir, exist_ok=True)
    return _disk_figures(scratch_dir, scratch_dir)


def s3_usage(store, scratch_dir: str, top: int = 20) -> dict:
    """`usage` with the s3 backend: one listing of the bucket under the prefix, by area and by
    top-level entry (`uploads/<uuid>`, `output/<job>`, `tmp/<job>.<attempt>`), plus the disk
    figures of this host's scratch directory, the disk that fills now. The disk fields keep
    their names (they describe the scratch disk here); `areas` have `objects` and, as an
    alias for readers of the local shape, `files`."""
    result = scratch_disk_usage(scratch_dir)
    result["backend"] = "s3"
    result["bucket"] = store.bucket
    result["prefix"] = store.prefix
    result["scratch_dir"] = scratch_dir
    areas = {a: {"bytes": 0, "objects": 0, "files": 0} for a in ("uploads", "output", "tmp")}
    entries: dict[str, int] = {}
    for rel, size, _mtime in store.list(""):
        area, _, rest = rel.partition("/")
        if area not in areas:
            area = "other"
            areas.setdefault(area, {"bytes": 0, "objects": 0, "files": 0})
        figures = areas[area]
        figures["bytes"] += size
        figures["objects"] += 1
        figures["files"] += 1
        name = rest.split("/", 1)[0] if area != "other" else rel.split("/", 1)[0]
        path = f"{area}/{name}" if area != "other" else name
        entries[path] = entries.get(path, 0) + size
    consumers = sorted(
        ({"path": p, "bytes": b} for p, b in entries.items()),
        key=lambda c: (-c["bytes"], c["path"]),
    )
    size, files = tree_size(scratch_dir)
    result["scratch"] = {"bytes": size, "files": files}
    result["areas"] = areas
    result["top"] = consumers[:top]
    return result


def old_tmp_entries(root: str, older_than_seconds: float, keep: set[str]) -> list[str]:
    """Top-level entries of tmp/ untouched for longer than the threshold.

    `keep` names entries that belong to running jobs; they are never returned whatever their age.
    """
    return old_entries(os.path.join(root, "tmp"), older_than_seconds, keep)


def old_entries(directory: str, older_than_seconds: float, keep: set[str]) -> list[str]:
    """`old_tmp_entries` of any directory (a host's scratch directory with the s3 backend)."""
    cutoff = time.time() - older_than_seconds
    found = []
    tmp = directory
    if not os.path.isdir(tmp):
        return found
    with os.scandir(tmp) as entries:
        for entry in entries:
            if entry.name in keep:
                continue
            newest = _newest_mtime(entry)
            if newest < cutoff:
                found.append(entry.path)
    return sorted(found)


def _newest_mtime(entry: os.DirEntry) -> float:
    newest = entry.stat(follow_symlinks=False).st_mtime
    if entry.is_dir(follow_symlinks=False):
        for dirpath, _dirs, names in os.walk(entry.path):
            for n in names:
                try:
                    newest = max(newest, os.lstat(os.path.join(dirpath, n)).st_mtime)
                except FileNotFoundError:
                    pass
    return newest


def remove(path: str) -> int:
    """Delete a file or directory tree; returns bytes freed."""
    if os.path.isdir(path) and not os.path.islink(path):
        size, _ = tree_size(path)
        shutil.rmtree(path, ignore_errors=True)
        return size
    try:
        size = os.lstat(path).st_size
        os.unlink(path)
        return size
    except FileNotFoundError:
        return 0


def is_regular_file(path: str) -> bool:
    return os.path.isfile(path) and not os.path.islink(path)
