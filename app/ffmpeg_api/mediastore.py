"""Where media lives, behind one interface: the local storage root or an S3 bucket.

Both backends name things by the same relative paths (`uploads/<uuid>/<name>`,
`output/<job id>/<file>`), so job rows, ownership records and API answers do not depend on
the backend. What differs is only how bytes move:

- local: paths resolve under STORAGE_ROOT (every symlink resolved, so nothing outside it is
  reachable); a job works in STORAGE_ROOT/tmp and its directory is renamed into output/.
- s3: a worker downloads the input into its scratch (WORK_DIR), works there, uploads the
  outputs under tmp/<job>.<attempt>/ and publishes them (manifest last, objectstore.publish).

`version(relpath)` identifies one content of a path: the submission records it with the
ffprobe result, and a worker that finds the same version reuses that probe.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import posixpath
import re
import shutil
import tempfile
import threading
import time

from . import storage
from .errors import PathError
from .settings import Settings

log = logging.getLogger(__name__)

PROBE_HEAD = 64 * 1024 * 1024  # bytes of an upload's start kept for ffprobe (s3 backend)
PROBE_TAIL = 32 * 1024 * 1024  # and of its end
PROBE_TTL = 5.0  # seconds a probe of the bucket is reused
PROBE_WAIT = 3.0  # seconds /health or a scrape waits for it; slower counts as down


class LocalStore:
    backend = "local"
    probe_at_upload = False  # the file stays where ffprobe can read it at submission

    def __init__(self, settings: Settings):
        self.settings = settings
        self.root = settings.storage_root

    def prepare(self) -> None:
        """Create what this host writes to."""
        storage.ensure_layout(self.root)

    def normalize(self, client_path, field: str = "input") -> str:
        """The relative path a client's path names, confined to the root (or a 422)."""
        try:
            real = storage.resolve(self.root, client_path)
        except PathError as exc:
            raise PathError(exc.message, field=field) from None
        return storage.relative(self.root, real)

    def version(self, relpath: str) -> str | None:
        """Size and mtime of a regular file; None when there is none."""
        path = os.path.join(self.root, relpath)
        if not storage.is_regular_file(path):
            return None
        st = os.stat(path)
        return f"{st.st_size}:{st.st_mtime_ns}"

    def spool(self):
        return storage.spool(self.root)

    @contextlib.contextmanager
    def receive(self, name, stream, max_bytes, budget=None, expected_size=None):
        """Store an upload; yields (StoredFile, a local path to probe it at)."""
        stored = storage.save_stream(self.root, name, stream, max_bytes, budget, expected_size)
        yield stored, os.path.join(self.root, stored.path)

    def discard_upload(self, relpath: str) -> None:
        storage.remove(os.path.join(self.root, posixpath.dirname(relpath)))

    @contextlib.contextmanager
    def local_copy(self, relpath: str, scratch: str):
        """A local path holding relpath's bytes and the version it had: the file itself."""
        yield os.path.join(self.root, relpath), self.version(relpath)

    def publish(self, job_id: str, attempt: int, work_dir: str) -> list[tuple[str, int]]:
        """Move the finished work directory into output/<job> in one rename; its files."""
        storage.ensure_layout(self.root)
        final_dir = os.path.join(self.settings.output_dir, job_id)
        if os.path.exists(final_dir):  # left by an attempt that died after its rename
            shutil.rmtree(final_dir)
        os.replace(work_dir, final_dir)
        files = []
        for dirpath, _dirs, names in os.walk(final_dir):
            for name in names:
                path = os.path.join(dirpath, name)
                files.append((storage.relative(self.root, path), os.path.getsize(path)))
        return sorted(files)

    def unpublish(self, job_id: str) -> None:
        shutil.rmtree(os.path.join(self.settings.output_dir, job_id), ignore_errors=True)

    def output_exists(self, relpath: str) -> bool:
        return os.path.isfile(storage.resolve(self.root, relpath))

    def reachable(self) -> bool:
        tmp = self.settings.tmp_dir
        return os.path.isdir(tmp) and os.access(tmp, os.W_OK)

    def health(self) -> dict:
        usage = storage.disk_usage(self.root)
        status = "ok"
        if not usage["writable"] or usage["free_percent"] < 2:
            status = "error"
        elif usage["free_percent"] < 10:
            status = "warning"
        return {
            "status": status,
            "backend": self.backend,
            "free_bytes": usage["free_bytes"],
            "free_percent": usage["free_percent"],
            "writable": usage["writable"],
        }


_KEY_SEGMENT = re.compile(r"^[^\x00-\x1f\x7f]+$")


class StoreUnavailable(RuntimeError):
    """The bucket failed a job's read or write: the reason a user reads on the failed job
    (no endpoint, no key; operators find those in the worker's log)."""


@contextlib.contextmanager
def _bucket_errors(doing: str):
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        log.warning("object store failed %s: %s", doing, exc)
        if code in ("404", "NoSuchKey", "NotFound"):
            raise StoreUnavailable(f"{doing}: the object is gone from storage") from None
        raise StoreUnavailable(f"{doing}: the object store answered {code}") from None
    except BotoCoreError as exc:
        log.warning("object store failed %s: %s", doing, exc)
        raise StoreUnavailable(
            f"{doing}: the object store could not be reached ({exc.__class__.__name__})"
        ) from None


class S3Store:
    backend = "s3"
    probe_at_upload = True  # the bytes are local only while the upload streams

    def __init__(self, settings: Settings):
        from .objectstore import S3Store as Bucket

        self.settings = settings
        self.bucket = Bucket.from_settings(settings)

    def prepare(self) -> None:
        os.makedirs(self.settings.scratch_dir, exist_ok=True)

    def normalize(self, client_path, field: str = "input") -> str:
        """A client's path as a key below the prefix: relative, no `.`/`..` segment, no
        control characters (a key is not a filesystem path, but the same spelling rules keep
        one path naming one object)."""
        if not isinstance(client_path, str) or not client_path or "\x00" in client_path:
            raise PathError("path must be a non-empty string", field=field)
        parts = client_path.strip("/").split("/")
        if any(p in ("", ".", "..") or not _KEY_SEGMENT.match(p) for p in parts):
            raise PathError("path is outside the storage root", field=field)
        return "/".join(parts)

    def version(self, relpath: str) -> str | None:
        head = self.bucket.head(relpath)
        return head["ETag"] if head else None

    def spool(self):
        os.makedirs(self.settings.scratch_dir, exist_ok=True)
        return tempfile.TemporaryFile(dir=self.settings.scratch_dir)

    @contextlib.contextmanager
    def receive(self, name, stream, max_bytes, budget=None, expected_size=None):
        """Stream an upload into the bucket and, beside it, into a scratch file the caller
        probes (its head and tail: `_ProbeCopy`); the scratch copy is gone when the block
        ends."""
        os.makedirs(self.settings.scratch_dir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=self.settings.scratch_dir, suffix=".part") as copy:
            kept = _ProbeCopy(stream, copy)
            stored = self.bucket.save_stream(name, kept, max_bytes, budget, expected_size)
            kept.finish()
            yield stored, copy.name

    def discard_upload(self, relpath: str) -> None:
        self.bucket.delete_keys([relpath])

    @contextlib.contextmanager
    def local_copy(self, relpath: str, scratch: str):
        """Download relpath into `scratch`; yields (path, the ETag of the bytes fetched)."""
        os.makedirs(scratch, exist_ok=True)
        path = os.path.join(scratch, storage.safe_name(posixpath.basename(relpath)))
        with _bucket_errors("fetching the input"):
            etag = self.bucket.download(relpath, path)
        try:
            yield path, etag
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def publish(self, job_id: str, attempt: int, work_dir: str) -> list[tuple[str, int]]:
        """Upload the work directory under tmp/<job>.<attempt>/, publish it to output/<job>/
        with the manifest last, and drop every staged copy of the job's attempts."""
        staged = f"tmp/{job_id}.{attempt}"
        with _bucket_errors("saving the outputs"):
            files = self.bucket.upload_dir(work_dir, staged)
            self.bucket.publish(staged, f"output/{job_id}", files)
            self.bucket.delete_keys([rel for rel, _s, _m in self.bucket.list_raw(f"tmp/{job_id}.")])
        return [(f"output/{job_id}/{rel}", size) for rel, size in files]

    def unpublish(self, job_id: str) -> None:
        self.bucket.delete_prefix(f"output/{job_id}")

    def output_exists(self, relpath: str) -> bool:
        return self.bucket.head(relpath) is not None

    def health(self) -> dict:
        return _s3_health(self)

    def reachable(self) -> bool:
        return BUCKET_PROBE.result(self)["ok"]


class _ProbeCopy:
    """A stream whose reads are also kept, for ffprobe, in a scratch file of the upload's
    true size that holds its first PROBE_HEAD and last PROBE_TAIL bytes, the middle a hole.
    That is what ffprobe reads to report streams and duration: the container's header and
    first packets at the start; an index, a trailing moov atom or the last timestamps at the
    end. Writing the whole upload to scratch cost more than the upload itself (0.9 s per
    256 MiB here); this writes at most 96 MiB and holds at most PROBE_TAIL in memory."""

    def __init__(self, stream, copy):
        self._stream, self._copy = stream, copy
        self._seen = 0
        self._tail: collections.deque[bytes] = collections.deque()
        self._tail_bytes = 0

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        if not data:
            return data
        head = max(0, min(len(data), PROBE_HEAD - self._seen))
        if head:
            self._copy.write(data[:head])
        if head < len(data):
            rest = data[head:]
            self._tail.append(rest)
            self._tail_bytes += len(rest)
            while self._tail_bytes - len(self._tail[0]) >= PROBE_TAIL:
                self._tail_bytes -= len(self._tail.popleft())
        self._seen += len(data)
        return data

    def finish(self) -> None:
        """Write the kept tail where it belongs and give the file the stream's length."""
        self._copy.seek(self._seen - self._tail_bytes)
        for chunk in self._tail:
            self._copy.write(chunk)
        self._copy.truncate(self._seen)
        self._copy.flush()


class BucketProbe:
    """The bucket's health (HEAD plus a write/read/delete probe), probed in a thread of its
    own so that a hanging endpoint slows no /health or scrape by more than PROBE_WAIT, and at
    most once per PROBE_TTL per process. /health and the metrics read this one probe."""

    def __init__(self):
        self.lock = threading.Lock()
        self.at = float("-inf")
        self.answer: dict | None = None
        self.thread: threading.Thread | None = None
        self.which: tuple | None = None

    def result(self, store: S3Store) -> dict:
        s = store.settings
        which = (s.s3_endpoint_url, s.s3_bucket, s.s3_prefix)
        with self.lock:
            if which != self.which:  # other settings (tests): start afresh
                self.which, self.answer, self.at = which, None, float("-inf")
            if self.answer is not None and time.monotonic() - self.at < PROBE_TTL:
                return self.answer
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(
                    target=self._run, args=(store,), name="bucket-probe", daemon=True
                )
                self.thread.start()
            thread = self.thread
        thread.join(PROBE_WAIT)
        with self.lock:
            if thread.is_alive():
                return {"ok": False, "error": f"the bucket did not answer within {PROBE_WAIT:g} s"}
            return self.answer or {"ok": False, "error": "no probe yet"}

    def _run(self, store: S3Store) -> None:
        try:
            answer = {"ok": True, **store.bucket.probe()}
        except Exception as exc:  # botocore's errors, timeouts, refused connections
            log.warning("bucket probe failed: %s", exc)
            answer = {"ok": False, "error": f"{exc.__class__.__name__}: {exc}"[:300]}
        with self.lock:
            self.answer, self.at = answer, time.monotonic()


BUCKET_PROBE = BucketProbe()


def _s3_health(store: S3Store) -> dict:
    """A failing bucket is a `warning` (the service degrades: uploads and new outputs fail,
    queued jobs wait), so /health says degraded rather than unhealthy."""
    probe = BUCKET_PROBE.result(store)
    result = {"status": "ok" if probe["ok"] else "warning", "backend": "s3", **probe}
    result.pop("ok")
    result.setdefault("bucket", store.settings.s3_bucket)
    try:
        scratch = storage.scratch_disk_usage(store.settings.scratch_dir)
        result["scratch_free_bytes"] = scratch["free_bytes"]
        result["scratch_free_percent"] = scratch["free_percent"]
    except OSError as exc:
        result["status"] = "warning"
        result["scratch_error"] = str(exc)
    return result


_stores: dict = {}
_stores_lock = threading.Lock()


def store_for(settings: Settings):
    """The store of these settings, one per process (a work horse forked from a worker makes
    its own boto3 client: clients are not shared across a fork)."""
    if settings.storage_backend != "s3":
        return LocalStore(settings)
    key = (
        os.getpid(),
        settings.storage_root,
        settings.s3_endpoint_url,
        settings.s3_region,
        settings.s3_bucket,
        settings.s3_prefix,
        settings.s3_addressing_style,
        settings.work_dir,
    )
    with _stores_lock:
        store = _stores.get(key)
        if store is None:
            store = _stores[key] = S3Store(settings)
        return store
