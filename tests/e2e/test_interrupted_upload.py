"""Issue 15 item 3: an upload whose client goes away mid-body is not stored.

A real gunicorn (one sync worker) takes uploads from a raw socket client that declares 4 MB,
sends 1.4 MB and then closes the connection (or only its sending side, to read the answer).
Afterwards nothing is under uploads/, no `uploads` row exists and tmp/ holds nothing new; the
half-closed client reads a 400 `upload_incomplete`. Both bodies are covered: raw (with a
Content-Length, and chunked without one) and multipart/form-data.
"""

import json
import os
import socket

import pytest
import requests

DECLARED = 4 * 1024 * 1024
SENT = 1400 * 1024
BOUNDARY = "----ffmpeg-api-test-boundary"


def storage_state(settings):
    files = set()
    for dirpath, _dirs, names in os.walk(settings.uploads_dir):
        files.update(os.path.relpath(os.path.join(dirpath, n), settings.uploads_dir) for n in names)
    return files, set(os.listdir(settings.tmp_dir))


def upload_rows(db_conn):
    n = db_conn.execute("SELECT count(*) AS n FROM uploads").fetchone()["n"]
    db_conn.rollback()
    return n


def raw_request(key, *, length=DECLARED):
    head = [
        "POST /api/v1/files?name=partial.mp4 HTTP/1.1",
        "Host: 127.0.0.1",
        f"X-API-Key: {key['raw']}",
        "Content-Type: application/octet-stream",
        f"Content-Length: {length}",
    ]
    return head, os.urandom(SENT)


def multipart_request(key, *, length=DECLARED):
    part = (
        f"--{BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="file"; filename="partial.mp4"\r\n'
        "Content-Type: video/mp4\r\n\r\n"
    ).encode()
    head = [
        "POST /api/v1/files HTTP/1.1",
        "Host: 127.0.0.1",
        f"X-API-Key: {key['raw']}",
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}",
        f"Content-Length: {length}",
    ]
    return head, part + os.urandom(SENT - len(part))


def chunked_request(key):
    head = [
        "POST /api/v1/files?name=partial.mp4 HTTP/1.1",
        "Host: 127.0.0.1",
        f"X-API-Key: {key['raw']}",
        "Content-Type: application/octet-stream",
        "Transfer-Encoding: chunked",
    ]
    block = os.urandom(64 * 1024)
    frames = b"".join(b"%x\r\n" % len(block) + block + b"\r\n" for _ in range(SENT // len(block)))
    return head, frames  # no terminating zero-length chunk


def send(url, head, body, *, read_answer):
    """Send the head and `body`, then close (read_answer=False) or close only the sending side
    and return (status, JSON body) of the answer."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    try:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        if not read_answer:
            return None
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while True:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    finally:
        sock.close()
    status_line, _, rest = answer.partition(b"\r\n")
    payload = rest.partition(b"\r\n\r\n")[2]
    return int(status_line.split()[1]), json.loads(payload or b"null")


def wait_until_handled(url):
    """One sync worker serves one request at a time: once a second request is answered, the
    interrupted one has been handled to its end (its clean-up included)."""
    assert requests.get(url + "/api/v1/health/live", timeout=30).ok


@pytest.fixture
def api(settings, start_api):
    return start_api(settings, workers=1)


BODIES = {
    "raw": raw_request,
    "multipart": multipart_request,
    "chunked": chunked_request,
}


@pytest.mark.parametrize("kind", sorted(BODIES))
def test_a_client_closing_mid_upload_leaves_nothing(api, settings, user_key, db_conn, kind):
    before = storage_state(settings)
    head, body = BODIES[kind](user_key)
    send(api, head, body, read_answer=False)
    wait_until_handled(api)
    assert storage_state(settings) == before
    assert upload_rows(db_conn) == 0


@pytest.mark.parametrize("kind", sorted(BODIES))
def test_a_truncated_upload_is_answered_400_upload_incomplete(
    api, settings, user_key, db_conn, kind
):
    before = storage_state(settings)
    head, body = BODIES[kind](user_key)
    status, answer = send(api, head, body, read_answer=True)
    assert status == 400, answer
    assert answer["error"]["code"] == "upload_incomplete", answer
    assert answer["error"]["field"] == "file"
    wait_until_handled(api)
    assert storage_state(settings) == before
    assert upload_rows(db_conn) == 0


@pytest.mark.parametrize("kind", ["raw", "multipart"])
def test_the_same_client_sending_the_whole_body_stores_it(api, settings, user_key, db_conn, kind):
    """The control: the client above is a correct one when it sends what it declares."""
    head, body = BODIES[kind](user_key, length=0)
    if kind == "multipart":
        body += f"\r\n--{BOUNDARY}--\r\n".encode()
    head[-1] = f"Content-Length: {len(body)}"
    status, answer = send(api, head, body, read_answer=True)
    assert status == 201, answer
    file_bytes = SENT if kind == "raw" else SENT - body.index(b"\r\n\r\n") - 4
    assert answer["size"] == file_bytes
    assert os.path.getsize(os.path.join(settings.storage_root, answer["path"])) == file_bytes
    assert upload_rows(db_conn) == 1
