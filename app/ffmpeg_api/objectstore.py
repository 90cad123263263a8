"""Media in an S3-compatible bucket (AWS S3, MinIO, Ceph RGW) through boto3.

Keys mirror the local layout under S3_PREFIX: `uploads/<uuid>/<name>`, `output/<job id>/...`
and `tmp/` for outputs not yet published, so a job row's paths are the same strings on both
backends and ownership records do not change.

- Uploads stream into a multipart upload (PART_SIZE parts; never the whole file in memory),
  hashed on the way. Any failure aborts it: no object and no multipart upload is left.
- A job's outputs are uploaded under `tmp/<job>.<attempt>/`, then published: each copied to
  `output/<job>/`, and the manifest (`output/<job>/.manifest.json`, the list of files) written
  last. A job whose manifest is missing is not published, whatever else is there.
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
import os
import posixpath
import time
import uuid
from dataclasses import dataclass

from .errors import PayloadTooLarge, UploadIncomplete, ValidationError
from .storage import StoredFile, safe_name

PART_SIZE = 8 * 1024 * 1024  # S3's minimum part is 5 MiB; 8 MiB is boto3's default
READ_CHUNK = 1024 * 1024
UPLOAD_CONCURRENCY = 4  # parts in flight per upload
UPLOAD_BUFFERED_PARTS = 6  # parts an upload may hold in memory (48 MiB)
MANIFEST = ".manifest.json"
DELETE_BATCH = 1000  # DeleteObjects takes at most 1,000 keys

CONTENT_TYPES = {
    ".m3u8": "application/vnd.apple.mpegurl",
    ".ts": "video/mp2t",
    ".m4s": "video/iso.segment",
    ".mp4": "video/mp4",
    ".webm": "video/webm",
    ".mkv": "video/x-matroska",
    ".mov": "video/quicktime",
    ".jpg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
    ".gif": "image/gif",
    ".m4a": "audio/mp4",
    ".aac": "audio/aac",
    ".mp3": "audio/mpeg",
    ".opus": "audio/ogg",
    ".ogg": "audio/ogg",
    ".flac": "audio/flac",
    ".wav": "audio/wav",
    ".json": "application/json",
}


class _CheckedBody:
    """An upload's stream as boto3 reads it: hashed and counted on the way, and refused (by
    raising from read) when it passes MAX_UPLOAD_BYTES or the storage budget, ends before its
    declared length, or is empty."""

    def __init__(self, stream, max_bytes: int, budget, expected_size: int | None):
        self.stream, self.max_bytes = stream, max_bytes
        self.budget, self.expected_size = budget, expected_size
        self.digest = hashlib.sha256()
        self.size = 0

    def read(self, amount: int = -1) -> bytes:
        want = READ_CHUNK if amount is None or amount < 0 else amount
        chunks, got = [], 0
        while got < want:
            chunk = self.stream.read(min(READ_CHUNK, want - got))
            if not chunk:
                break
            self.size += len(chunk)
            if self.size > self.max_bytes:
                raise PayloadTooLarge(f"upload exceeds the limit of {self.max_bytes} bytes")
            if self.budget is not None:
                self.budget(self.size, len(chunk))
            self.digest.update(chunk)
            chunks.append(chunk)
            got += len(chunk)
        if not got:  # the end of the stream: refuse it now, before boto3 completes
            if self.expected_size is not None and self.size < self.expected_size:
                raise UploadIncomplete(
                    f"the upload ended after {self.size} of the {self.expected_size} bytes"
                    " its Content-Length declared; send it again",
                    field="file",
                )
            if self.size == 0:
                raise ValidationError("the upload is empty", field="file")
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _transfer_config():
    from boto3.s3.transfer import TransferConfig

    config = TransferConfig(
        multipart_threshold=PART_SIZE,
        multipart_chunksize=PART_SIZE,
        max_concurrency=UPLOAD_CONCURRENCY,
    )
    # s3transfer's bound on the parts a non-seekable upload reads ahead (boto3's own
    # TransferConfig does not take it as an argument; its default is 10).
    config.max_in_memory_upload_chunks = UPLOAD_BUFFERED_PARTS
    return config


def content_type(name: str) -> str:
    ext = os.path.splitext(name)[1].lower()
    return CONTENT_TYPES.get(ext) or mimetypes.guess_type(name)[0] or "application/octet-stream"


def client_for(settings):
    """The boto3 client of the settings' store; credentials from boto3's standard chain."""
    import boto3
    from botocore.config import Config

    config = Config(
        s3={"addressing_style": settings.s3_addressing_style},
        retries={"max_attempts": 3, "mode": "standard"},
        connect_timeout=5,
        read_timeout=60,
    )
    return boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url or None,
        region_name=settings.s3_region or None,
        config=config,
    )


@dataclass
class S3Store:
    client: object
    bucket: str
    prefix: str = ""

    @classmethod
    def from_settings(cls, settings) -> S3Store:
        return cls(client_for(settings), settings.s3_bucket, settings.s3_prefix.strip("/"))

    def key(self, relpath: str) -> str:
        relpath = relpath.lstrip("/")
        return f"{self.prefix}/{relpath}" if self.prefix else relpath

    def relpath(self, key: str) -> str:
        return key[len(self.prefix) + 1 :] if self.prefix else key

    # --- uploads ----------------------------------------------------------------------

    def save_stream(
        self, name: str, stream, max_bytes: int, budget=None, expected_size: int | None = None
    ) -> StoredFile:
        """`storage.save_stream`'s contract, into the bucket: the same refusals, and nothing
        left behind by a refused, failed or interrupted upload.

        boto3's managed transfer does the multipart upload (PART_SIZE parts, several in flight,
        checksummed, at most UPLOAD_BUFFERED_PARTS held in memory) and aborts it when the
        stream raises: every refusal is raised from the stream's read, before its bytes go."""
        name = safe_name(name)
        relpath = f"uploads/{uuid.uuid4().hex}/{name}"
        key = self.key(relpath)
        body = _CheckedBody(stream, max_bytes, budget, expected_size)
        self.client.upload_fileobj(
            body,
            self.bucket,
            key,
            ExtraArgs={"ContentType": content_type(name)},
            Config=_transfer_config(),
        )
        etag = self.client.head_object(Bucket=self.bucket, Key=key)["ETag"]
        return StoredFile(relpath, body.size, body.digest.hexdigest(), etag)

    # --- reading ----------------------------------------------------------------------

    def download(self, relpath: str, dest: str) -> str:
        """Copy an object to a local file (a worker's scratch), streamed in chunks; the ETag
        of the bytes copied. A failed copy leaves no file."""
        obj = self.client.get_object(Bucket=self.bucket, Key=self.key(relpath))
        try:
            with open(dest, "wb") as out:
                for chunk in obj["Body"].iter_chunks(READ_CHUNK):
                    out.write(chunk)
        except BaseException:
            if os.path.exists(dest):
                os.unlink(dest)
            raise
        finally:
            obj["Body"].close()
        return obj["ETag"]

    def head(self, relpath: str) -> dict | None:
        from botocore.exceptions import ClientError

        try:
            return self.client.head_object(Bucket=self.bucket, Key=self.key(relpath))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def get(self, relpath: str, byte_range: str | None = None) -> dict:
        """GetObject, passing an HTTP Range header through (206 answers keep ContentRange)."""
        kwargs = {"Bucket": self.bucket, "Key": self.key(relpath)}
        if byte_range:
            kwargs["Range"] = byte_range
        return self.client.get_object(**kwargs)

    def presigned_url(self, relpath: str, ttl: int, download_name: str | None = None) -> str:
        params = {"Bucket": self.bucket, "Key": self.key(relpath)}
        if download_name:
            params["ResponseContentDisposition"] = f'attachment; filename="{download_name}"'
        return self.client.generate_presigned_url("get_object", Params=params, ExpiresIn=ttl)

    # --- publishing a job's outputs ----------------------------------------------------

    def upload_dir(self, local_dir: str, dest_prefix: str) -> list[tuple[str, int]]:
        """Every file below local_dir to dest_prefix/<same relative path>, each with its
        content type; [(relative name, size)], sorted."""
        uploaded = []
        for dirpath, _dirs, names in os.walk(local_dir):
            for name in names:
                path = os.path.join(dirpath, name)
                rel = os.path.relpath(path, local_dir).replace(os.sep, "/")
                self.client.upload_file(
                    path,
                    self.bucket,
                    self.key(posixpath.join(dest_prefix, rel)),
                    ExtraArgs={"ContentType": content_type(name)},
                )
                uploaded.append((rel, os.path.getsize(path)))
        return sorted(uploaded)

    def publish(self, staged_prefix: str, final_prefix: str, files: list[tuple[str, int]]) -> None:
        """Copy staged outputs to their final keys, write the manifest last, then drop the
        staged copies. Until the manifest exists the job has no published outputs."""
        self.delete_prefix(final_prefix)  # left by an attempt that died while publishing
        for rel, _size in files:
            self.client.copy_object(
                Bucket=self.bucket,
                Key=self.key(posixpath.join(final_prefix, rel)),
                CopySource={
                    "Bucket": self.bucket,
                    "Key": self.key(posixpath.join(staged_prefix, rel)),
                },
                MetadataDirective="COPY",
            )
        manifest = json.dumps({"files": [{"name": r, "size": s} for r, s in files]}).encode()
        self.client.put_object(
            Bucket=self.bucket,
            Key=self.key(posixpath.join(final_prefix, MANIFEST)),
            Body=manifest,
            ContentType="application/json",
        )
        self.delete_prefix(staged_prefix)

    def published(self, final_prefix: str) -> list[dict] | None:
        """The manifest's files of a published prefix; None when it is not published."""
        from botocore.exceptions import ClientError

        try:
            body = self.client.get_object(
                Bucket=self.bucket, Key=self.key(posixpath.join(final_prefix, MANIFEST))
            )["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                return None
            raise
        return json.loads(body)["files"]

    # --- listing and removal -----------------------------------------------------------

    def list(self, prefix: str):
        """(relative path, size, last-modified epoch) of every object under prefix/."""
        return self.list_raw(prefix.rstrip("/") + "/")

    def list_raw(self, start: str):
        """Like `list`, for every key that starts with `start` (tmp/<job>. finds every
        attempt's staging of a job)."""
        paginator = self.client.get_paginator("list_objects_v2")
        full = self.key(start)
        for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
            for obj in page.get("Contents", []):
                yield self.relpath(obj["Key"]), obj["Size"], obj["LastModified"].timestamp()

    def children(self, area: str) -> tuple[list[str], list[str]]:
        """Names directly under area/, by one delimited listing (a page holds 1,000 of them):
        (names of sub-prefixes, names of loose objects)."""
        full = self.key(area + "/")
        prefixes, loose = [], []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=full, Delimiter="/"):
            for cp in page.get("CommonPrefixes", []):
                prefixes.append(cp["Prefix"][len(full) :].rstrip("/"))
            for obj in page.get("Contents", []):
                loose.append(obj["Key"][len(full) :])
        return prefixes, loose

    def delete_keys(self, relpaths: list[str]) -> int:
        """Delete objects in batches of DELETE_BATCH; how many."""
        done = 0
        for i in range(0, len(relpaths), DELETE_BATCH):
            batch = relpaths[i : i + DELETE_BATCH]
            out = self.client.delete_objects(
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": self.key(r)} for r in batch], "Quiet": True},
            )
            if out.get("Errors"):
                first = out["Errors"][0]
                raise RuntimeError(f"could not delete {first['Key']}: {first['Message']}")
            done += len(batch)
        return done

    def delete_prefix(self, prefix: str) -> int:
        return self.delete_keys([rel for rel, _size, _mtime in self.list(prefix)])

    def stale_multipart_uploads(self, older_than_seconds: float) -> list[tuple[str, str]]:
        """(key, upload id) of multipart uploads begun longer ago than the threshold under
        our prefix: left by a process killed mid-upload (an abort never ran)."""
        cutoff = time.time() - older_than_seconds
        found = []
        paginator = self.client.get_paginator("list_multipart_uploads")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.key("")):
            for up in page.get("Uploads", []):
                if up["Initiated"].timestamp() < cutoff:
                    found.append((up["Key"], up["UploadId"]))
        return found

    # --- health -----------------------------------------------------------------------

    def probe(self) -> dict:
        """HEAD the bucket, then write, read back and delete a small object."""
        started = time.monotonic()
        self.client.head_bucket(Bucket=self.bucket)
        relpath = f"tmp/health-{uuid.uuid4().hex}"
        payload = uuid.uuid4().bytes
        self.client.put_object(Bucket=self.bucket, Key=self.key(relpath), Body=payload)
        try:
            got = self.client.get_object(Bucket=self.bucket, Key=self.key(relpath))["Body"].read()
        finally:
            self.client.delete_object(Bucket=self.bucket, Key=self.key(relpath))
        if got != payload:
            raise RuntimeError("the probe object read back different bytes")
        return {"bucket": self.bucket, "latency_ms": round(1000 * (time.monotonic() - started), 1)}
