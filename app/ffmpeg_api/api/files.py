"""Uploads: streamed to disk in chunks, hashed on the way, never held in memory."""

from __future__ import annotations

import dataclasses

from flask import Blueprint, g, jsonify, request
from werkzeug.exceptions import ClientDisconnected
from werkzeug.formparser import FormDataParser

from .. import mediastore, storage_quota
from ..errors import PayloadTooLarge, UploadIncomplete, ValidationError
from ..media import probe as media_probe
from .pipeline import authenticated, db, settings

bp = Blueprint("files", __name__)


class _ClientBody:
    """The request body as the client sends it: counts the bytes read, and turns the server's
    report of a body cut short (gunicorn raises on a truncated chunk, Werkzeug turns that into
    ClientDisconnected) into UploadIncomplete. A body with a Content-Length that just stops
    reads short without an error: the callers compare the count with what was declared."""

    def __init__(self, stream):
        self._stream = stream
        self.received = 0

    def read(self, size: int = -1) -> bytes:
        try:
            data = self._stream.read(size)
        except (ClientDisconnected, OSError) as exc:
            raise UploadIncomplete(
                f"the upload ended after {self.received} bytes, before its last chunk",
                field="file",
            ) from exc
        self.received += len(data)
        return data


def _multipart_file(store):
    """The multipart form's parts, its file parts spooled in the store's scratch. A body
    that ends before its closing boundary is refused (Werkzeug's own parsing of request.files
    would drop the cut-off part and let the request go on without it)."""
    body = _ClientBody(request.stream)
    parser = FormDataParser(
        stream_factory=lambda *_args, **_kw: store.spool(),
        max_form_memory_size=request.max_form_memory_size,
        max_content_length=request.max_content_length,
        max_form_parts=request.max_form_parts,
        silent=False,
    )
    try:
        _stream, _form, files = parser.parse(
            body, request.mimetype, request.content_length, request.mimetype_params
        )
    except ValueError as exc:
        declared = request.content_length
        if declared is not None and body.received < declared:
            raise UploadIncomplete(
                f"the upload ended after {body.received} of the {declared} bytes its"
                " Content-Length declared; send it again",
                field="file",
            ) from exc
        raise ValidationError(f"malformed multipart body: {exc}", field="file") from exc
    return files


@bp.post("/files")
@authenticated
def upload():
    s = settings()
    store = mediastore.store_for(s)
    principal = g.principal
    length = request.content_length
    if length is not None and length > s.max_upload_bytes + 64 * 1024:
        raise PayloadTooLarge(f"upload exceeds the limit of {s.max_upload_bytes} bytes")
    multipart = request.mimetype == "multipart/form-data"
    # A multipart body's length includes its envelope, so only a raw body's is the file's.
    budget = storage_quota.upload_budget(db(), s, principal.user_id, None if multipart else length)
    if multipart:
        files = _multipart_file(store)
        try:
            item = files.get("file")
            if item is None:
                raise ValidationError("multipart upload needs a field named 'file'", field="file")
            name = request.args.get("name") or item.filename
            stored, probe = _receive(store, s, name, item.stream, budget)
        finally:
            for _field, part in files.items(multi=True):
                part.close()
    else:
        name = request.args.get("name")
        if not name:
            raise ValidationError("a raw upload needs ?name=<file name>", field="name")
        stored, probe = _receive(store, s, name, _ClientBody(request.stream), budget, length)
    try:
        storage_quota.record_upload(
            db(),
            s,
            user_id=principal.user_id,
            api_key_id=principal.key_id,
            stored=stored,
            probe=probe,
        )
    except BaseException:
        # An upload nobody owns would be usable by admins only and counted for no one.
        store.discard_upload(stored.path)
        raise
    response = jsonify({"path": stored.path, "size": stored.size, "sha256": stored.sha256})
    response.status_code = 201
    return response


def _receive(store, s, name, stream, budget, expected_size=None):
    """Store the upload: (StoredFile, probe record or None). A store whose bytes are local
    only while they arrive (s3) has them probed now, from its scratch copy; the local
    backend's are probed at their first submission (jobs.probe_stored), which keeps an
    ffprobe off every upload that is never converted."""
    probe = None
    with store.receive(name, stream, s.max_upload_bytes, budget, expected_size) as (stored, path):
        if store.probe_at_upload:
            probe = media_probe.recorded_probe(
                path, ffprobe_bin=s.ffprobe_bin, max_pixels=s.max_input_pixels
            )
        if stored.version is None:  # the local backend: the file's own size and mtime
            stored = dataclasses.replace(stored, version=store.version(stored.path))
    return stored, probe
