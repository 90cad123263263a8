"""Hostile or absurd input through a real gunicorn (issue 14 item 5): every one is a 4xx in the
usual error shape naming what is wrong, never a 500; large JSON bodies are refused unread."""

import socket

import pytest
import requests


@pytest.fixture
def api(start_api, settings):
    return start_api(settings, workers=1)


def _refused(r, status, field, code=None):
    assert r.status_code == status, (r.status_code, r.text)
    error = r.json()["error"]
    assert error["field"] == field and error["message"], error
    if code:
        assert error["code"] == code, error


@pytest.mark.parametrize(
    "query,field",
    [
        ("offset=99999999999999999999", "offset"),
        ("offset=-1", "offset"),
        ("offset=1e3", "offset"),
        ("limit=99999999999999999999", "limit"),
        ("limit=nan", "limit"),
    ],
)
def test_job_list_paging_out_of_range_is_422(api, user_key, query, field):
    r = requests.get(f"{api}/api/v1/jobs?{query}", headers=user_key["headers"], timeout=10)
    _refused(r, 422, field, "validation_error")


@pytest.mark.parametrize(
    "path,field",
    [
        ("/admin/stats?since_hours=inf", "since_hours"),
        ("/admin/stats?since_hours=-inf", "since_hours"),
        ("/admin/stats?since_hours=nan", "since_hours"),
        ("/admin/stats?since_hours=1e300", "since_hours"),
        ("/admin/stats?since_hours=-5", "since_hours"),
        ("/admin/keys?used_within_hours=nan", "used_within_hours"),
        ("/admin/keys?used_within_hours=inf", "used_within_hours"),
        ("/admin/keys?used_within_hours=1e300", "used_within_hours"),
    ],
)
def test_non_finite_or_huge_hours_are_422(api, admin_key, path, field):
    r = requests.get(f"{api}/api/v1{path}", headers=admin_key["headers"], timeout=10)
    _refused(r, 422, field, "validation_error")


def test_sane_numbers_still_work(api, user_key, admin_key):
    r = requests.get(f"{api}/api/v1/jobs?limit=5&offset=10", headers=user_key["headers"])
    assert r.status_code == 200 and (r.json()["limit"], r.json()["offset"]) == (5, 10)
    r = requests.get(f"{api}/api/v1/admin/stats?since_hours=0.5", headers=admin_key["headers"])
    assert r.status_code == 200 and r.json()["since_hours"] == 0.5
    r = requests.get(f"{api}/api/v1/admin/keys?used_within_hours=1", headers=admin_key["headers"])
    assert r.status_code == 200


@pytest.mark.parametrize(
    "body,field",
    [
        ({"name": "n", "user_id": "u", "rate_limit": 99999999999999999999}, "rate_limit"),
        ({"name": "n", "user_id": "u", "rate_limit": -1}, "rate_limit"),
        ({"name": "n", "user_id": "u", "rate_limit": 1.5}, "rate_limit"),
    ],
)
def test_body_numbers_out_of_range_are_422(api, admin_key, body, field):
    r = requests.post(f"{api}/api/v1/admin/keys", headers=admin_key["headers"], json=body)
    _refused(r, 422, field, "validation_error")


def test_maintenance_ttl_beyond_redis_is_422(api, admin_key):
    r = requests.put(
        f"{api}/api/v1/admin/maintenance", headers=admin_key["headers"], json={"ttl": 10**20}
    )
    _refused(r, 422, "ttl", "validation_error")


@pytest.mark.parametrize(
    "raw",
    [
        "[" * 100_000 + "]" * 100_000,
        '{"a":' * 100_000 + "1" + "}" * 100_000,
        '{"operations": ' + "[" * 200 + "]" * 200 + "}",  # parses, but deeper than any request
    ],
    ids=["array-100k", "object-100k", "object-200"],
)
def test_deeply_nested_json_is_400(api, user_key, raw):
    r = requests.post(
        f"{api}/api/v1/convert",
        headers={**user_key["headers"], "Content-Type": "application/json"},
        data=raw,
        timeout=30,
    )
    _refused(r, 400, "body", "json_too_deep")


@pytest.mark.parametrize(
    "raw", ['{"ttl": NaN}', '{"ttl": Infinity}', '{"ttl": -Infinity}', '{"ttl": 1e400}']
)
def test_non_finite_json_numbers_are_400(api, admin_key, raw):
    r = requests.put(
        f"{api}/api/v1/admin/maintenance",
        headers={**admin_key["headers"], "Content-Type": "application/json"},
        data=raw,
    )
    _refused(r, 400, "body", "bad_request")


def _send(url: str, head: list[str], body_frames) -> tuple[int, bytes]:
    """Send the request head and as much of the body as the server takes, then read the
    answer without ever finishing the body: proves the server decided on what it had."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(("\r\n".join([*head, f"Host: {host}:{port}"]) + "\r\n\r\n").encode())
        try:
            for frame in body_frames:
                sock.sendall(frame)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before taking everything
        answer = b""
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            answer += data
    head_bytes, _, body = answer.partition(b"\r\n\r\n")
    return int(head_bytes.split(b" ", 2)[1]), body


def test_declared_json_body_over_the_limit_is_413_unread(api, user_key, settings):
    assert settings.max_json_bytes == 1024 * 1024  # the default
    status, body = _send(
        api,
        [
            "POST /api/v1/convert HTTP/1.1",
            f"X-API-Key: {user_key['raw']}",
            "Content-Type: application/json",
            f"Content-Length: {64 * 1024 * 1024}",
            "Connection: close",
        ],
        [],  # not one byte of the 64 MiB: the answer comes from the header alone
    )
    assert status == 413 and b'"json_too_large"' in body, body


def test_chunked_json_body_is_cut_off_at_the_limit(api, user_key):
    block = b" " * (256 * 1024)
    start = b'{"input": "x", "pad": "'
    frames = [b"%x\r\n" % len(start) + start + b"\r\n"]
    frames += [b"%x\r\n" % len(block) + block + b"\r\n"] * 8  # 2 MiB, and never a last chunk
    status, body = _send(
        api,
        [
            "POST /api/v1/convert HTTP/1.1",
            f"X-API-Key: {user_key['raw']}",
            "Content-Type: application/json",
            "Transfer-Encoding: chunked",
            "Connection: close",
        ],
        frames,
    )
    assert status == 413 and b'"json_too_large"' in body, body


def test_json_under_a_configured_limit_is_read(make_settings, start_api, admin_key):
    url = start_api(make_settings(max_json_bytes=200), workers=1)
    small = {"reason": "short", "ttl": 60}
    r = requests.put(f"{url}/api/v1/admin/maintenance", headers=admin_key["headers"], json=small)
    assert r.status_code == 200 and r.json()["enabled"] is True
    big = {"reason": "x" * 300}
    r = requests.put(f"{url}/api/v1/admin/maintenance", headers=admin_key["headers"], json=big)
    _refused(r, 413, "body", "json_too_large")
