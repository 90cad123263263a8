"""remote_input.fetch_http against real HTTP servers on loopback: a real clip, a redirect, a
body over the cap, a 404, a stalled server, and redirects to refused addresses."""

import hashlib
import http.server
import os
import subprocess
import threading
import time

import pytest

from ffmpeg_api.remote_input import InputFetchFailed, fetch_http
from ffmpeg_api.settings import Settings


class _Handler(http.server.BaseHTTPRequestHandler):
    clip: bytes = b""

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path == "/clip.mp4":
            self._send(200, self.clip)
        elif self.path == "/redirect":
            self._redirect("/clip.mp4")
        elif self.path.startswith("/to?"):
            self._redirect(self.path.split("?", 1)[1])
        elif self.path == "/loop":
            self._redirect("/loop")
        elif self.path == "/stall":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"x")
            self.wfile.flush()
            time.sleep(3)
        elif self.path == "/big-no-length":
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            for _ in range(64):
                self.wfile.write(b"y" * 4096)
        else:
            self._send(404, b"no")

    def _send(self, status, body):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location):
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture(scope="module")
def media_server(clip_files, storage_root):
    with open(os.path.join(storage_root, clip_files["short.mp4"]), "rb") as fh:
        _Handler.clip = fh.read()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def lab(**env):
    return Settings.from_env({"INPUT_ALLOW_HTTP": "true", "INPUT_ALLOW_PRIVATE": "true", **env})


def test_a_clip_is_downloaded_whole_and_probes(media_server, tmp_path):
    dest = fetch_http(f"{media_server}/clip.mp4", lab(), str(tmp_path / "in"))
    with open(dest, "rb") as fh:
        assert hashlib.sha256(fh.read()).digest() == hashlib.sha256(_Handler.clip).digest()
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=codec_type", "-of", "csv=p=0", dest],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "video" in probe.stdout


def test_a_redirect_is_followed_and_rechecked(media_server, tmp_path):
    dest = fetch_http(f"{media_server}/redirect", lab(), str(tmp_path / "in"))
    assert os.path.getsize(dest) == len(_Handler.clip)


def test_404_fails_with_the_status(media_server, tmp_path):
    with pytest.raises(InputFetchFailed, match="HTTP 404"):
        fetch_http(f"{media_server}/missing", lab(), str(tmp_path / "in"))
    assert not os.path.exists(tmp_path / "in")


def test_a_body_over_the_cap_fails_by_length_and_by_count(media_server, tmp_path):
    small = lab(MAX_UPLOAD_BYTES="1000")
    with pytest.raises(InputFetchFailed, match="MAX_UPLOAD_BYTES"):
        fetch_http(f"{media_server}/clip.mp4", small, str(tmp_path / "a"))
    with pytest.raises(InputFetchFailed, match="MAX_UPLOAD_BYTES"):
        fetch_http(f"{media_server}/big-no-length", small, str(tmp_path / "b"))
    assert not os.path.exists(tmp_path / "a") and not os.path.exists(tmp_path / "b")


def test_a_stalled_server_times_out(media_server, tmp_path):
    started = time.monotonic()
    with pytest.raises(InputFetchFailed):
        fetch_http(f"{media_server}/stall", lab(INPUT_FETCH_TIMEOUT="0.5"), str(tmp_path / "in"))
    assert time.monotonic() - started < 2.5


def test_a_redirect_loop_stops(media_server, tmp_path):
    with pytest.raises(InputFetchFailed, match="redirected more than"):
        fetch_http(f"{media_server}/loop", lab(), str(tmp_path / "in"))


def test_unreachable_port_fails_clearly(tmp_path):
    with pytest.raises(InputFetchFailed, match="unreachable"):
        fetch_http("http://127.0.0.1:9/x", lab(), str(tmp_path / "in"))


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/clip.mp4",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:127.0.0.1]:{port}/clip.mp4",
        "http://localhost:{port}/clip.mp4",
    ],
)
def test_internal_addresses_are_refused_without_input_allow_private(media_server, tmp_path, url):
    port = media_server.rsplit(":", 1)[1]
    strict = Settings.from_env({"INPUT_ALLOW_HTTP": "true"})
    with pytest.raises(InputFetchFailed, match="internal address"):
        fetch_http(url.format(port=port), strict, str(tmp_path / "in"))


def test_a_redirect_to_a_refused_scheme_is_refused(media_server, tmp_path):
    """Every hop is judged again: a redirect to file:// is refused, never read as a path."""
    with pytest.raises(InputFetchFailed, match="scheme 'file'"):
        fetch_http(f"{media_server}/to?file:///etc/passwd", lab(), str(tmp_path / "in"))
    assert not os.path.exists(tmp_path / "in")
