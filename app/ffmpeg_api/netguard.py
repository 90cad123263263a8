"""The one rule for outbound connections to user-supplied hosts (webhooks, input URLs).

A name is resolved once; every address it resolves to must be public (unless the caller's
allow_private setting says otherwise, for tests and labs), and the connection goes to one of
those checked addresses while the Host header, TLS SNI and certificate check use the name. The
name is never resolved a second time, so a DNS answer that changes between check and connect
cannot reach inside. Callers use no proxy and follow no redirect without checking it here again.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl


class TargetUnresolvable(Exception):
    """The target host has no address (a failed attempt: DNS may answer later)."""


class TargetRefused(RuntimeError):
    """The target host resolves to an address that is not public."""


def checked_addresses(host: str, port: int, *, allow_private: bool) -> list[tuple[int, tuple]]:
    """Resolve `host` once and return its (family, sockaddr) pairs, every one of them public
    unless `allow_private`; the caller connects to these and never resolves the name again."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise TargetUnresolvable(f"{host}: {exc}") from None
    addresses = list(dict.fromkeys((family, sockaddr) for family, _, _, _, sockaddr in infos))
    if not addresses:
        raise TargetUnresolvable(f"{host}: no address")
    if not allow_private:
        bad = [sockaddr[0] for _, sockaddr in addresses if is_internal(sockaddr[0])]
        if bad:
            raise TargetRefused(f"resolves to an internal address ({bad[0]})")
    return addresses


def is_internal(addr: str) -> bool:
    """True for every address that is not publicly routable: whatever `ipaddress` does not call
    global (loopback, RFC 1918, link-local, carrier-grade NAT 100.64/10, ULA, …), plus
    multicast, reserved, unspecified and IPv6 site-local (fec0::/10, deprecated, which
    `ipaddress` calls global). IPv4-mapped (::ffff:a.b.c.d) and 6to4 addresses are judged by
    the IPv4 address they carry; NAT64 (64:ff9b::/96) is reserved, hence refused."""
    ip = ipaddress.ip_address(addr.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped:
            return is_internal(str(ip.ipv4_mapped))
        if ip.is_site_local:
            return True
        if ip.sixtofour and is_internal(str(ip.sixtofour)):
            return True  # a 6to4 relay would deliver to the embedded IPv4 address
    return not ip.is_global or ip.is_multicast or ip.is_reserved or ip.is_unspecified


def connect_checked(addresses: list[tuple[int, tuple]], timeout: float) -> socket.socket:
    """A TCP socket to the first checked address that accepts; by sockaddr, so nothing on this
    path looks the name up again."""
    last: OSError | None = None
    for family, sockaddr in addresses:
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.settimeout(timeout)
            sock.connect(sockaddr)
            return sock
        except OSError as exc:
            sock.close()
            last = exc
    raise last or OSError("no address to connect to")


class PinnedHTTPConnection(http.client.HTTPConnection):
    """http.client to a checked address; `host` (the URL's name) only fills the Host header."""

    def __init__(self, host, port, *, addresses, timeout):
        super().__init__(host, port, timeout=timeout)
        self._addresses = addresses

    def connect(self):
        self.sock = connect_checked(self._addresses, self.timeout)


class PinnedHTTPSConnection(http.client.HTTPSConnection):
    """As PinnedHTTPConnection under TLS: SNI and the certificate check use the URL's name."""

    def __init__(self, host, port, *, addresses, timeout, context):
        super().__init__(host, port, timeout=timeout, context=context)
        self._addresses = addresses
        self._tls = context

    def connect(self):
        self.sock = self._tls.wrap_socket(
            connect_checked(self._addresses, self.timeout), server_hostname=self.host
        )


def pinned_connection(parts, port: int, addresses, timeout: float, tls_context=None):
    """(connection, request target) for a split http(s) URL, pinned to its checked addresses;
    https verifies the URL's name with `tls_context` (default: the system's trust store)."""
    if parts.scheme == "https":
        conn = PinnedHTTPSConnection(
            parts.hostname,
            port,
            addresses=addresses,
            timeout=timeout,
            context=tls_context or ssl.create_default_context(),
        )
    else:
        conn = PinnedHTTPConnection(parts.hostname, port, addresses=addresses, timeout=timeout)
    return conn, (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
