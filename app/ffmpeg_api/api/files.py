"""Uploads: streamed to disk in chunks, hashed on the way, never held in memory."""

from __future__ import annotations

import os

from flask import Blueprint, g, jsonify, request

from .. import ownership, storage, storage_quota
from ..errors import PayloadTooLarge, ValidationError
from .pipeline import authenticated, db, settings

bp = Blueprint("files", __name__)


@bp.post("/files")
@authenticated
def upload():
    s = settings()
    principal = g.principal
    length = request.content_length
    if length is not None and length > s.max_upload_bytes + 64 * 1024:
        raise PayloadTooLarge(f"upload exceeds the limit of {s.max_upload_bytes} bytes")
    multipart = request.mimetype == "multipart/form-data"
    # A multipart body's length includes its envelope, so only a raw body's is the file's.
    budget = storage_quota.upload_budget(db(), s, principal.user_id, None if multipart else length)
    if multipart:
        item = request.files.get("file")
        if item is None:
            raise ValidationError("multipart upload needs a field named 'file'", field="file")
        name = request.args.get("name") or item.filename
        stored = storage.save_stream(s.storage_root, name, item.stream, s.max_upload_bytes, budget)
    else:
        name = request.args.get("name")
        if not name:
            raise ValidationError("a raw upload needs ?name=<file name>", field="name")
        stored = storage.save_stream(
            s.storage_root, name, request.stream, s.max_upload_bytes, budget
        )
    conn = db()
    try:
        with conn.transaction():
            storage_quota.lock_user(conn, principal.user_id)
            storage_quota.confirm(conn, s, principal.user_id, stored.size)
            ownership.record_upload(
                conn,
                path=stored.path,
                user_id=principal.user_id,
                api_key_id=principal.key_id,
                size=stored.size,
                sha256=stored.sha256,
            )
    except BaseException:
        # An upload nobody owns would be usable by admins only and counted for no one.
        storage.remove(os.path.join(s.storage_root, os.path.dirname(stored.path)))
        raise
    response = jsonify({"path": stored.path, "size": stored.size, "sha256": stored.sha256})
    response.status_code = 201
    return response
