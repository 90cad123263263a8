"""Jobs: submit, read, list, cancel, logs and outputs."""

from __future__ import annotations

import os
import posixpath

from flask import (
    Blueprint,
    Response,
    g,
    jsonify,
    make_response,
    request,
    send_file,
    stream_with_context,
)

from .. import jobs, mediastore, storage
from ..errors import Conflict, NotFound, ValidationError
from .params import BIGINT_MAX, query_int
from .pipeline import authenticated, db, json_body, redis_conn, settings

bp = Blueprint("jobs", __name__)


def links(job_id: str) -> dict:
    base = f"/api/v1/jobs/{job_id}"
    return {"self": base, "logs": f"{base}/logs", "output": f"{base}/output", "cancel": base}


def view(row: dict) -> dict:
    data = jobs.public(row)
    # The worker stores these relative to the storage root already; rows written before it
    # did are rewritten on the way out.
    data["error"] = storage.hide_root(data["error"], settings().storage_root)
    data["links"] = links(data["id"])
    return data


@bp.post("/convert")
@authenticated
def convert():
    s = settings()
    body = json_body()
    spec = jobs.validate_submission(body, s, redis_conn(), db(), g.principal)
    row = jobs.create(db(), redis_conn(), s, spec, g.principal)
    response = jsonify(view(row))
    response.status_code = 202
    response.headers["Location"] = links(str(row["id"]))["self"]
    return response


@bp.get("/jobs")
@authenticated
def list_jobs():
    limit = query_int("limit", 50, minimum=1, maximum=200)
    offset = query_int("offset", 0, maximum=BIGINT_MAX)
    rows, total = jobs.list_jobs(
        db(), g.principal, status=request.args.get("status"), limit=limit, offset=offset
    )
    return jsonify(
        {"jobs": [view(r) for r in rows], "total": total, "limit": limit, "offset": offset}
    )


@bp.get("/jobs/<job_id>")
@authenticated
def get_job(job_id: str):
    return jsonify(view(jobs.get(db(), job_id, g.principal)))


@bp.delete("/jobs/<job_id>")
@authenticated
def cancel_job(job_id: str):
    outcome = jobs.cancel(db(), redis_conn(), job_id, g.principal)
    return jsonify({**view(outcome["job"]), "changed": outcome["changed"]})


@bp.get("/jobs/<job_id>/logs")
@authenticated
def job_logs(job_id: str):
    row = jobs.get(db(), job_id, g.principal, columns="id, status, logs")
    logs = storage.hide_root(row["logs"], settings().storage_root)
    return jsonify({"id": str(row["id"]), "status": row["status"], "logs": logs or ""})


@bp.get("/jobs/<job_id>/output")
@authenticated
def job_output(job_id: str):
    s = settings()
    row = jobs.get(db(), job_id, g.principal)
    if row["status"] != "completed":
        raise Conflict(f"job {row['id']} is {row['status']}; outputs exist once it completes")
    wanted = request.args.get("file")
    if wanted:
        candidates = [
            o
            for o in row["outputs"]
            if o.endswith("/" + wanted.lstrip("/")) and o.startswith(f"output/{row['id']}/")
        ]
        if not candidates:
            raise NotFound(f"job has no output named {wanted!r}; see its outputs list")
        relpath = candidates[0]
    else:
        relpath = row["output_path"]
    if not relpath:
        raise NotFound("job has no output file")
    store = mediastore.store_for(s)
    redirect = _flag("redirect", default=True)
    if store.backend == "local":
        path = storage.resolve(s.storage_root, relpath)
        if not os.path.isfile(path):
            raise NotFound("the output file is gone (cleaned up or archived)")
        return send_file(
            path, conditional=True, as_attachment=True, download_name=os.path.basename(path)
        )
    name = posixpath.basename(relpath)
    if redirect:
        if not store.output_exists(relpath):
            raise NotFound("the output file is gone (cleaned up or archived)")
        response = make_response("", 302)
        response.headers["Location"] = store.bucket.presigned_url(
            relpath, s.output_url_ttl, download_name=name
        )
        response.headers["Cache-Control"] = "private, no-store"
        return response
    return _stream_object(store, relpath, name)


def _flag(name: str, *, default: bool) -> bool:
    raw = request.args.get(name)
    if raw is None:
        return default
    if raw.lower() in ("1", "true", "yes"):
        return True
    if raw.lower() in ("0", "false", "no"):
        return False
    raise ValidationError(f"{name} must be true or false", field=name)


def _stream_object(store, relpath: str, name: str):
    """The object through the API, chunk by chunk, a client's Range passed on to the store
    (206 with its Content-Range; 416 when the range is past the end)."""
    from botocore.exceptions import ClientError

    wanted = request.headers.get("Range")
    try:
        obj = store.bucket.get(relpath, wanted)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        if code in ("404", "NoSuchKey"):
            raise NotFound("the output file is gone (cleaned up or archived)") from None
        if code == "InvalidRange":
            response = make_response("", 416)
            head = store.bucket.head(relpath)
            if head:
                response.headers["Content-Range"] = f"bytes */{head['ContentLength']}"
            return response
        raise
    body = obj["Body"]
    response = Response(
        stream_with_context(body.iter_chunks(256 * 1024)),
        status=206 if obj.get("ContentRange") else 200,
        mimetype=obj.get("ContentType") or "application/octet-stream",
        direct_passthrough=True,
    )
    response.headers["Content-Length"] = str(obj["ContentLength"])
    response.headers["Accept-Ranges"] = "bytes"
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    if obj.get("ContentRange"):
        response.headers["Content-Range"] = obj["ContentRange"]
    if obj.get("ETag"):
        response.headers["ETag"] = obj["ETag"]
    response.call_on_close(body.close)
    return response
