"""remote_input.fetch and fetch_http against real HTTP(S) servers on loopback: a real clip, a
redirect, a body over the cap or cut short, a 404, stalled and dripping servers, TLS, and
redirects to refused addresses."""

import hashlib
import http.server
import os
import ssl
import subprocess
import threading
import time

import pytest

from ffmpeg_api import netguard
from ffmpeg_api.remote_input import InputFetchFailed, fetch, fetch_http
from ffmpeg_api.settings import Settings


class _Handler(http.server.BaseHTTPRequestHandler):
    clip: bytes = b""

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path.split("?")[0] in ("/clip.mp4", "/"):
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
        elif self.path == "/hang":
            time.sleep(5)
        elif self.path == "/drip":
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            for _ in range(100):
                self.wfile.write(b"z")
                self.wfile.flush()
                time.sleep(0.05)
        elif self.path == "/short":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"w" * 10)
            self.close_connection = True
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


def _serve(address, tls=None):
    server = http.server.ThreadingHTTPServer((address, 0), _Handler)
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def clip(clip_files, storage_root):
    with open(os.path.join(storage_root, clip_files["short.mp4"]), "rb") as fh:
        _Handler.clip = fh.read()


@pytest.fixture(scope="module")
def media_server(clip):
    server = _serve("127.0.0.1")
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    """A self-signed certificate for localhost and 127.0.0.1 (openssl, so no package needed)."""
    d = tmp_path_factory.mktemp("tls")
    cert, key = str(d / "cert.pem"), str(d / "key.pem")
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", key, "-out", cert, "-subj", "/CN=localhost"),
            *("-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture(scope="module")
def tls_server(clip, tls_files):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*tls_files)
    server = _serve("127.0.0.1", ctx)
    yield f"https://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def trusting(tls_files):
    return ssl.create_default_context(cafile=tls_files[0])


@pytest.fixture(scope="module")
def public_server(clip):
    """A server on 127.0.0.2, which the `as_public` fixture lets netguard call public: the
    first hop of a redirect while INPUT_ALLOW_PRIVATE is off."""
    server = _serve("127.0.0.2")
    yield f"http://127.0.0.2:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def as_public(monkeypatch):
    """netguard's real rule for every address but 127.0.0.2 (stands in for a public host)."""
    real = netguard.is_internal
    monkeypatch.setattr(netguard, "is_internal", lambda addr: addr != "127.0.0.2" and real(addr))


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


# --- fetch: the entry point of the worker -------------------------------------------------


def test_fetch_names_the_file_after_the_url_and_leaves_nothing_else(media_server, tmp_path):
    path = fetch(f"{media_server}/clip.mp4?token=x", str(tmp_path), lab())
    assert path == str(tmp_path / "clip.mp4")
    assert os.listdir(tmp_path) == ["clip.mp4"]
    with open(path, "rb") as fh:
        assert fh.read() == _Handler.clip


def test_fetch_without_a_name_in_the_path_saves_input(media_server, tmp_path):
    """The name comes from the URL asked for, not from where it redirects."""
    assert fetch(f"{media_server}/", str(tmp_path), lab()) == str(tmp_path / "input")
    assert fetch(f"{media_server}/redirect", str(tmp_path), lab()) == str(tmp_path / "redirect")
    assert sorted(os.listdir(tmp_path)) == ["input", "redirect"]


@pytest.mark.parametrize(
    ("path", "env", "reason"),
    [
        ("/missing", {}, "HTTP 404"),
        ("/clip.mp4", {"MAX_UPLOAD_BYTES": "1000"}, "MAX_UPLOAD_BYTES"),
        ("/big-no-length", {"MAX_UPLOAD_BYTES": "1000"}, "MAX_UPLOAD_BYTES"),
        ("/short", {}, "cut short"),
        ("/stall", {"INPUT_FETCH_TIMEOUT": "0.5"}, "timed out"),
    ],
)
def test_fetch_fails_with_a_reason_and_leaves_no_file(media_server, tmp_path, path, env, reason):
    with pytest.raises(InputFetchFailed, match=reason) as exc:
        fetch(f"{media_server}{path}", str(tmp_path), lab(**env))
    assert str(tmp_path) not in str(exc.value)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("path", ["/hang", "/drip"])
def test_the_timeout_bounds_the_whole_transfer(media_server, tmp_path, path):
    """/hang never sends headers; /drip sends a byte every 50 ms for 5 s, each recv well
    inside any per-read timeout: INPUT_FETCH_TIMEOUT must still stop both at about 0.5 s."""
    started = time.monotonic()
    with pytest.raises(InputFetchFailed, match=r"timed out after 0\.5 s"):
        fetch(f"{media_server}{path}", str(tmp_path), lab(INPUT_FETCH_TIMEOUT="0.5"))
    assert time.monotonic() - started < 1.5
    assert os.listdir(tmp_path) == []


def test_fetch_judges_the_url_first(tmp_path):
    with pytest.raises(InputFetchFailed, match="scheme must be https, http or s3"):
        fetch("file:///etc/passwd", str(tmp_path), lab())
    with pytest.raises(InputFetchFailed, match="http:// URLs are not allowed"):
        fetch("http://127.0.0.1:9/a.mp4", str(tmp_path), Settings.from_env({}))
    with pytest.raises(InputFetchFailed, match="bucket 'secret' is not allowed"):
        fetch("s3://secret/a.mp4", str(tmp_path), lab())
    assert os.listdir(tmp_path) == []


def test_fetch_into_a_missing_directory_names_no_path(media_server, tmp_path):
    with pytest.raises(InputFetchFailed, match="could not store the input") as exc:
        fetch(f"{media_server}/clip.mp4", str(tmp_path / "gone"), lab())
    assert "gone" not in str(exc.value)


def test_https_with_a_trusted_certificate(tls_server, trusting, tmp_path):
    path = fetch(f"{tls_server}/clip.mp4", str(tmp_path), lab(), tls_context=trusting)
    assert os.path.getsize(path) == len(_Handler.clip)


def test_https_with_an_untrusted_certificate_fails(tls_server, tmp_path):
    with pytest.raises(InputFetchFailed, match="TLS certificate not accepted"):
        fetch(f"{tls_server}/clip.mp4", str(tmp_path), lab())
    assert os.listdir(tmp_path) == []


def test_https_redirect_to_http_needs_input_allow_http(
    tls_server, media_server, trusting, tmp_path
):
    s = Settings.from_env({"INPUT_ALLOW_PRIVATE": "true"})
    with pytest.raises(InputFetchFailed, match="scheme 'http' is not allowed"):
        fetch(f"{tls_server}/to?{media_server}/clip.mp4", str(tmp_path), s, tls_context=trusting)
    assert os.listdir(tmp_path) == []


def test_the_public_stand_in_is_fetched_with_private_addresses_refused(
    public_server, as_public, tmp_path
):
    strict = Settings.from_env({"INPUT_ALLOW_HTTP": "true"})
    assert os.path.getsize(fetch(f"{public_server}/redirect", str(tmp_path), strict)) > 0


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.1:{port}/clip.mp4",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:127.0.0.1]:{port}/clip.mp4",
        "http://localhost:{port}/clip.mp4",
    ],
)
def test_a_redirect_to_an_internal_address_is_refused(
    public_server, media_server, as_public, tmp_path, target
):
    """The first hop is allowed (the public stand-in); the hop it redirects to is judged
    again and refused, though a server answers there (media_server, on 127.0.0.1)."""
    port = media_server.rsplit(":", 1)[1]
    strict = Settings.from_env({"INPUT_ALLOW_HTTP": "true"})
    with pytest.raises(InputFetchFailed, match="internal address"):
        fetch(f"{public_server}/to?{target.format(port=port)}", str(tmp_path), strict)
    assert os.listdir(tmp_path) == []
