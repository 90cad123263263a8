"""Webhook SSRF (issue 14 item 2): which addresses are refused, and that delivery connects to
the address that was checked, by the name's Host/SNI, whatever the resolver says afterwards."""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from ffmpeg_api import webhooks
from ffmpeg_api.errors import ValidationError
from ffmpeg_api.netguard import is_internal

NAME = "hooks.example.test"


@pytest.mark.parametrize(
    "addr",
    [
        "100.100.100.200",  # a cloud metadata service, in carrier-grade NAT 100.64.0.0/10
        "100.64.0.1",
        "fec0::1",  # IPv6 site-local
        "::ffff:127.0.0.1",
        "::ffff:100.100.100.200",
        "169.254.169.254",
        "10.1.2.3",
        "192.168.1.1",
        "172.16.0.1",
        "127.0.0.1",
        "::1",
        "0.0.0.0",
        "::",
        "fe80::1%eth0",
        "fc00::1",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "198.18.0.1",
        "2002:7f00:1::1",  # 6to4 carrying 127.0.0.1
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    ],
)
def test_non_public_addresses_are_internal(addr):
    assert is_internal(addr)


@pytest.mark.parametrize(
    "addr", ["93.184.216.34", "8.8.8.8", "::ffff:93.184.216.34", "2606:4700:4700::1111"]
)
def test_public_addresses_pass(addr):
    assert not is_internal(addr)


def _info(addr, port):
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    sockaddr = (addr, port, 0, 0) if family == socket.AF_INET6 else (addr, port)
    return [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr)]


@pytest.fixture
def rebinding_dns(monkeypatch):
    """NAME answers `first` on the first lookup and `later` on every one after it (the TTL-0
    DNS rebinding trick); IP literals resolve to themselves. Returns the list of looked-up names."""
    real = socket.getaddrinfo
    lookups: list[str] = []

    def install(first, later):
        def fake(host, port, *args, **kwargs):
            if host != NAME:
                return real(host, port, *args, **kwargs)
            lookups.append(host)
            return _info(first if len(lookups) == 1 else later, port)

        monkeypatch.setattr(socket, "getaddrinfo", fake)
        return lookups

    return install


@pytest.fixture
def webhook_env(monkeypatch):
    monkeypatch.setenv("WEBHOOK_SECRET", "s")
    monkeypatch.setenv("WEBHOOK_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("WEBHOOK_ALLOW_PRIVATE", "false")
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(var, raising=False)


def test_rebinding_cannot_move_the_connection_inside(rebinding_dns, webhook_env, monkeypatch):
    lookups = rebinding_dns("93.184.216.34", "127.0.0.1")
    connected = []

    def record(sock, address):
        connected.append(address[:2])
        raise ConnectionRefusedError("test: no network")

    monkeypatch.setattr(socket.socket, "connect", record)
    with pytest.raises(RuntimeError, match="failed after 1 attempts"):
        webhooks.deliver(f"http://{NAME}:8080/hook", "{}", 1)
    assert connected == [("93.184.216.34", 8080)]
    assert lookups == [NAME]  # resolved once: the connection used the checked answer


def test_a_target_that_now_resolves_inside_is_refused_at_delivery(
    rebinding_dns, webhook_env, monkeypatch
):
    rebinding_dns("100.100.100.200", "100.100.100.200")
    monkeypatch.setattr(socket.socket, "connect", pytest.fail)
    with pytest.raises(webhooks.TargetRefused, match=r"internal address \(100\.100\.100\.200\)"):
        webhooks.deliver(f"http://{NAME}/hook", "{}", 1)


def test_one_internal_answer_among_public_ones_is_refused(monkeypatch):
    monkeypatch.setattr(
        socket,
        "getaddrinfo",
        lambda host, port, *a, **k: _info("93.184.216.34", port) + _info("fec0::1", port),
    )
    with pytest.raises(ValidationError) as exc:
        webhooks.validate_url(f"https://{NAME}/hook", allow_private=False)
    assert exc.value.field == "webhook_url" and "fec0::1" in str(exc.value)


class _Recorder(BaseHTTPRequestHandler):
    def do_POST(self):
        self.server.seen.append(
            (self.headers["Host"], self.rfile.read(int(self.headers["Content-Length"])))
        )
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def local_server():
    servers = []

    def start(tls_context=None):
        server = HTTPServer(("127.0.0.1", 0), _Recorder)
        server.seen = []
        if tls_context is not None:
            server.socket = tls_context.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_pinned_connection_sends_the_name_as_host(rebinding_dns, local_server):
    # Only 127.0.0.1 listens; 127.0.0.2 (the later answer) would refuse the connection.
    server = local_server()
    rebinding_dns("127.0.0.1", "127.0.0.2")
    port = server.server_port
    response = webhooks.post(f"http://{NAME}:{port}/hook?x=1", b"{}", {}, allow_private=True)
    assert response.status == 204
    assert server.seen == [(f"{NAME}:{port}", b"{}")]


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for NAME only."""
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", f"/CN={NAME}", "-addext", f"subjectAltName=DNS:{NAME}"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return str(cert), str(key)


def _tls_server(local_server, certificate):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    names = []
    context.sni_callback = lambda sock, name, ctx: names.append(name)
    return local_server(context), names


def test_tls_uses_the_name_for_sni_and_certificate(rebinding_dns, local_server, certificate):
    server, sni = _tls_server(local_server, certificate)
    rebinding_dns("127.0.0.1", "127.0.0.2")
    trust = ssl.create_default_context(cafile=certificate[0])
    response = webhooks.post(
        f"https://{NAME}:{server.server_port}/hook",
        b"{}",
        {},
        allow_private=True,
        tls_context=trust,
    )
    assert response.status == 204 and sni == [NAME]


def test_tls_certificate_must_match_the_name(local_server, certificate):
    server, _ = _tls_server(local_server, certificate)
    trust = ssl.create_default_context(cafile=certificate[0])
    with pytest.raises(ssl.SSLCertVerificationError):
        webhooks.post(
            f"https://127.0.0.1:{server.server_port}/hook",
            b"{}",
            {},
            allow_private=True,
            tls_context=trust,
        )
    assert server.seen == []
