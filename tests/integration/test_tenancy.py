"""Tenancy and storage limits (issue 14, items 1 and 6), through the real API against real
PostgreSQL and Redis: a storage path is usable only by its owner or an admin key, and uploads
stop at the user's quota and at the storage root's free-space reserve."""

import os
import shutil
import socket
import uuid

import pytest

TRANSCODE = [{"type": "transcode"}]


def upload(client, key, data, name="in.mp4"):
    r = client.post(
        f"/api/v1/files?name={name}",
        headers=key["headers"],
        data=data,
        content_type="application/octet-stream",
    )
    assert r.status_code == 201, r.json
    return r.json["path"]


def clip_bytes(settings, clip_files):
    with open(os.path.join(settings.storage_root, clip_files["short.mp4"]), "rb") as fh:
        return fh.read()


def convert(client, key, body):
    return client.post("/api/v1/convert", headers=key["headers"], json=body)


def job_count(db_conn):
    n = db_conn.execute("SELECT count(*) AS n FROM jobs").fetchone()["n"]
    db_conn.rollback()
    return n


@pytest.fixture
def alice(make_key):
    return make_key(user="alice", name="alice")


@pytest.fixture
def bob(make_key):
    return make_key(user="bob", name="bob")


# --- item 1: cross-tenant reads ------------------------------------------------------------


def test_another_users_upload_is_answered_like_a_missing_file(
    client, settings, clip_files, alice, bob, admin_key, db_conn
):
    alices = upload(client, alice, clip_bytes(settings, clip_files))
    refused = convert(client, bob, {"input": alices, "operations": TRANSCODE})
    missing = convert(
        client, bob, {"input": f"uploads/{uuid.uuid4().hex}/in.mp4", "operations": TRANSCODE}
    )
    assert refused.status_code == 422 and refused.json["error"]["field"] == "input"
    # Nothing in the answer tells bob that the file exists for someone else.
    assert refused.json["error"] == missing.json["error"]
    assert job_count(db_conn) == 0

    assert convert(client, alice, {"input": alices, "operations": TRANSCODE}).status_code == 202
    assert convert(client, admin_key, {"input": alices, "operations": TRANSCODE}).status_code == 202
    owners = db_conn.execute("SELECT DISTINCT user_id FROM jobs").fetchall()
    assert sorted(r["user_id"] for r in owners) == ["alice", "ops"]


def test_uploads_are_recorded_with_their_owner(client, settings, alice, db_conn):
    data = os.urandom(4096)
    r = client.post(
        "/api/v1/files?name=a.bin",
        headers=alice["headers"],
        data=data,
        content_type="application/octet-stream",
    )
    assert set(r.json) == {"path", "size", "sha256"}
    row = db_conn.execute("SELECT * FROM uploads WHERE path = %s", (r.json["path"],)).fetchone()
    assert row["user_id"] == "alice" and row["api_key_id"] == alice["id"]
    assert row["size"] == 4096 and row["sha256"] == r.json["sha256"]


def test_another_users_job_output_is_refused_as_input(
    client, settings, clip_files, alice, bob, admin_key, db_conn
):
    alices = upload(client, alice, clip_bytes(settings, clip_files))
    job = convert(client, alice, {"input": alices, "operations": TRANSCODE}).json
    # What the worker publishes for that job: output/<job id>/output.mp4.
    out_dir = os.path.join(settings.output_dir, job["id"])
    os.makedirs(out_dir, exist_ok=True)
    shutil.copy(os.path.join(settings.storage_root, alices), os.path.join(out_dir, "output.mp4"))
    output = f"output/{job['id']}/output.mp4"

    refused = convert(client, bob, {"input": output, "operations": TRANSCODE})
    assert refused.status_code == 422 and refused.json["error"]["field"] == "input"
    assert "exist" in refused.json["error"]["message"]
    assert job_count(db_conn) == 1
    assert convert(client, alice, {"input": output, "operations": TRANSCODE}).status_code == 202
    assert convert(client, admin_key, {"input": output, "operations": TRANSCODE}).status_code == 202


def test_another_users_file_is_refused_as_analyze_reference(
    client, settings, clip_files, alice, bob, db_conn
):
    media = clip_bytes(settings, clip_files)
    alices = upload(client, alice, media)
    bobs = upload(client, bob, media)

    def analyze(key, reference):
        op = {"type": "analyze", "reference": reference, "metrics": ["psnr"]}
        return convert(client, key, {"input": bobs, "output": "mp4", "operations": [op]})

    refused = analyze(bob, alices)
    assert refused.status_code == 422
    assert refused.json["error"]["field"] == "operations[0].reference"
    assert job_count(db_conn) == 0
    assert analyze(bob, bobs).status_code == 202


def test_files_without_an_owner_are_for_admin_keys_only(
    client, settings, clip_files, alice, admin_key
):
    # Put there by hand, or uploaded before uploads were recorded: no one owns it.
    legacy = os.path.join(settings.uploads_dir, "legacy", "film.mp4")
    os.makedirs(os.path.dirname(legacy), exist_ok=True)
    shutil.copy(os.path.join(settings.storage_root, clip_files["short.mp4"]), legacy)
    body = {"input": "uploads/legacy/film.mp4", "operations": TRANSCODE}
    r = convert(client, alice, body)
    assert r.status_code == 422 and r.json["error"]["field"] == "input"
    assert convert(client, admin_key, body).status_code == 202


# --- item 6: storage quota and free-space reserve ------------------------------------------


def uploads_on_disk(settings):
    found = set()
    for dirpath, _dirs, names in os.walk(settings.uploads_dir):
        found.update(os.path.join(dirpath, n) for n in names)
    parts = {n for n in os.listdir(settings.tmp_dir) if n.startswith("upload-")}
    return found, parts


def chunked_upload(url, key, *, send_bytes, chunk=256 * 1024, headers=()):
    """POST /files with Transfer-Encoding: chunked (no Content-Length), sending `send_bytes`
    and then waiting for the answer without ending the body: the server must decide while the
    upload streams. Returns (status, body)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        head = [
            "POST /api/v1/files?name=big.bin HTTP/1.1",
            f"Host: {host}:{port}",
            f"X-API-Key: {key['raw']}",
            "Content-Type: application/octet-stream",
            *headers,
        ]
        if not any(h.lower().startswith("content-length") for h in headers):
            head.append("Transfer-Encoding: chunked")
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        sent = 0
        block = os.urandom(chunk)
        chunked = "Transfer-Encoding: chunked" in head
        try:
            while sent < send_bytes:
                frame = (b"%x\r\n" % len(block) + block + b"\r\n") if chunked else block
                sock.sendall(frame)
                sent += len(block)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before the whole body was sent
        answer = b""
        while b"\r\n\r\n" not in answer or not _complete(answer):
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            answer += data
    status = int(answer.split(b" ", 2)[1])
    return status, answer.split(b"\r\n\r\n", 1)[1].decode(errors="replace")


def _complete(answer: bytes) -> bool:
    head, _, body = answer.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":", 1)[1])
    return False


def test_chunked_upload_is_cut_off_at_the_quota_and_leaves_nothing(
    make_settings, start_api, alice, db_conn
):
    quota = 3 * 1024 * 1024
    s = make_settings(storage_quota_bytes_per_user=quota, storage_free_reserve_bytes=0)
    url = start_api(s, workers=1)
    before = uploads_on_disk(s)

    # Far more than the quota is offered, without a Content-Length: the server stops reading
    # once the quota is crossed (it is still waiting for the rest of the body when it answers).
    status, body = chunked_upload(url, alice, send_bytes=5 * 1024 * 1024)
    assert status == 507, body
    assert '"storage_quota_exceeded"' in body
    assert uploads_on_disk(s) == before
    assert db_conn.execute("SELECT count(*) AS n FROM uploads").fetchone()["n"] == 0
    db_conn.rollback()


def test_quota_counts_earlier_uploads_and_stored_outputs(make_settings, alice, bob, db_conn):
    from ffmpeg_api.api import create_app

    s = make_settings(storage_quota_bytes_per_user=100_000, storage_free_reserve_bytes=0)
    client = create_app(s).test_client()
    assert upload(client, alice, os.urandom(60_000), "a.bin")
    before = uploads_on_disk(s)
    over = client.post(
        "/api/v1/files?name=b.bin",
        headers=alice["headers"],
        data=os.urandom(50_000),
        content_type="application/octet-stream",
    )
    assert over.status_code == 507 and over.json["error"]["code"] == "storage_quota_exceeded"
    assert uploads_on_disk(s) == before
    # The quota is per user: bob still has all of his.
    assert upload(client, bob, os.urandom(90_000), "b.bin")

    # A completed job's outputs count while they are on disk.
    job_id = str(uuid.uuid4())
    db_conn.execute(
        "INSERT INTO jobs (id, status, priority, hardware, queue, input_path, output_format,"
        " operations, user_id, output_size) VALUES (%s, 'completed', 'normal', 'auto', 'default',"
        " 'uploads/x/in.mp4', 'mp4', '[]', 'carol', 80000)",
        (job_id,),
    )
    db_conn.commit()
    out_dir = os.path.join(s.output_dir, job_id)
    os.makedirs(out_dir)
    carol = {"headers": _key_headers(s, "carol")}
    small = os.urandom(30_000)
    refused = client.post(
        "/api/v1/files?name=c.bin",
        headers=carol["headers"],
        data=small,
        content_type="application/octet-stream",
    )
    assert refused.status_code == 507
    shutil.rmtree(out_dir)  # archived and removed: no longer stored
    assert upload(client, carol, small, "c.bin")


def _key_headers(settings, user):
    from ffmpeg_api import db as dbmod
    from ffmpeg_api import keys as keymod

    with dbmod.connect(settings.database_url) as conn:
        _key, raw = keymod.create(conn, name=user, user_id=user)
        conn.commit()
    return {"X-API-Key": raw}


def test_uploads_below_the_free_space_reserve_get_507(make_settings, start_api, alice, db_conn):
    from ffmpeg_api.api import create_app

    free = shutil.disk_usage(make_settings().storage_root).free
    # A reserve the disk cannot meet: the first chunk of a chunked upload is refused.
    s = make_settings(storage_free_reserve_bytes=free + 1024**3)
    url = start_api(s, workers=1)
    before = uploads_on_disk(s)
    status, body = chunked_upload(url, alice, send_bytes=2 * 1024 * 1024)
    assert status == 507, body
    assert '"insufficient_storage"' in body
    assert uploads_on_disk(s) == before

    # 512 MiB of headroom: a small upload fits, a declared 2 GiB one is refused before its
    # body is read.
    free = shutil.disk_usage(s.storage_root).free
    s = make_settings(storage_free_reserve_bytes=free - 512 * 1024**2, max_upload_bytes=4 * 1024**3)
    client = create_app(s).test_client()
    assert upload(client, alice, os.urandom(100_000), "small.bin")
    status, body = chunked_upload(
        start_api(s, workers=1),
        alice,
        send_bytes=256 * 1024,
        headers=(f"Content-Length: {2 * 1024**3}",),
    )
    assert status == 507 and '"insufficient_storage"' in body
    assert db_conn.execute("SELECT count(*) AS n FROM uploads").fetchone()["n"] == 1
    db_conn.rollback()


def test_cleanup_drops_records_of_uploads_whose_file_is_gone(make_settings, alice, db_conn):
    """`ffmpeg-api storage cleanup --orphans` keeps the uploads table in step with the disk,
    so a file removed by hand stops counting against its user's quota."""
    import json
    import subprocess
    import sys

    from helpers import env_for

    from ffmpeg_api.api import create_app

    s = make_settings(storage_quota_bytes_per_user=100_000, storage_free_reserve_bytes=0)
    client = create_app(s).test_client()
    kept = upload(client, alice, os.urandom(10_000), "kept.bin")
    gone = upload(client, alice, os.urandom(80_000), "gone.bin")
    shutil.rmtree(os.path.join(s.storage_root, os.path.dirname(gone)))
    third = os.urandom(50_000)
    r = client.post(
        "/api/v1/files?name=c.bin",
        headers=alice["headers"],
        data=third,
        content_type="application/octet-stream",
    )
    assert r.status_code == 507  # the removed file still counts until cleanup

    def cleanup(*extra):
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "ffmpeg_api.cli",
                "storage",
                "cleanup",
                "--orphans",
                "--json",
                *extra,
            ],
            env=env_for(s),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return json.loads(proc.stdout)

    def records():
        paths = [r["path"] for r in db_conn.execute("SELECT path FROM uploads ORDER BY path")]
        db_conn.rollback()
        return paths

    preview = cleanup("--dry-run")
    assert preview["changed"] is True and preview["removed_upload_records"] == [gone]
    assert records() == sorted([kept, gone])
    done = cleanup()
    assert done["changed"] is True and done["removed_upload_records"] == [gone]
    assert records() == [kept]
    assert cleanup()["changed"] is False
    assert upload(client, alice, third, "c.bin")
