"""Uploads: streamed to disk in chunks, hashed on the way, never held in memory."""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from .. import storage
from ..errors import PayloadTooLarge, ValidationError
from .pipeline import authenticated, settings

bp = Blueprint("files", __name__)


@bp.post("/files")
@authenticated
def upload():
    s = settings()
    length = request.content_length
    if length is not None and length > s.max_upload_bytes + 64 * 1024:
        raise PayloadTooLarge(f"upload exceeds the limit of {s.max_upload_bytes} bytes")
    if request.mimetype == "multipart/form-data":
        item = request.files.get("file")
        if item is None:
            raise ValidationError("multipart upload needs a field named 'file'", field="file")
        name = request.args.get("name") or item.filename
        stored = storage.save_stream(s.storage_root, name, item.stream, s.max_upload_bytes)
    else:
        name = request.args.get("name")
        if not name:
            raise ValidationError("a raw upload needs ?name=<file name>", field="name")
        stored = storage.save_stream(s.storage_root, name, request.stream, s.max_upload_bytes)
    response = jsonify({"path": stored.path, "size": stored.size, "sha256": stored.sha256})
    response.status_code = 201
    return response
