import ipaddress

import click
import pytest

from ffmpeg_api import ratelimit
from ffmpeg_api.api.pipeline import MAX_QUEUE_SECONDS, client_ip, queue_seconds
from ffmpeg_api.cli import parse_duration
from ffmpeg_api.keys import KEY_RE, generate, hash_key
from ffmpeg_api.netguard import is_internal
from ffmpeg_api.webhooks import sign

TRUSTED = [ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.0.0.0/8")]


def test_forwarded_for_ignored_from_untrusted_peer():
    assert client_ip("203.0.113.9", "1.2.3.4", TRUSTED) == "203.0.113.9"


def test_forwarded_for_read_from_the_right_through_trusted_proxies():
    assert client_ip("127.0.0.1", "6.6.6.6, 198.51.100.7, 10.1.1.1", TRUSTED) == "198.51.100.7"


def test_garbage_forwarded_for_falls_back_to_peer():
    assert client_ip("127.0.0.1", "not-an-ip", TRUSTED) == "127.0.0.1"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("t=1700000000000", 2.5),  # HAProxy: t=<epoch ms>
        ("1700000000.5", 2.0),  # seconds
        ("t=1700000000000000", 2.5),  # microseconds
        (" t=1700000002500 ", 0.0),  # no wait
        ("t=1700000009000", 0.0),  # from the future (clock skew): not a negative wait
        (f"t={(1700000002.5 - MAX_QUEUE_SECONDS - 1) * 1000:.0f}", 0.0),  # skew, not a queue
        ("t=soon", 0.0),
        ("", 0.0),
        (None, 0.0),
    ],
)
def test_queue_time_from_the_proxys_request_start(header, expected):
    assert queue_seconds(header, 1700000002.5) == pytest.approx(expected, abs=1e-3)


def test_rate_limit_verdicts():
    assert ratelimit.verdict("key", 10, 10, 5).allowed
    refused = ratelimit.verdict("key", 11, 10, 5)
    assert not refused.allowed and refused.retry_after == 5
    assert ratelimit.verdict("global", 10**6, 0, 5).allowed  # 0 = unlimited
    window, retry = ratelimit.window_now(120.5)
    assert window == 2 and retry == 60


def test_generated_keys_match_format_and_hash_is_stable():
    key_id, raw = generate()
    assert KEY_RE.match(raw).group(1) == key_id
    assert hash_key(raw) == hash_key(raw) and len(hash_key(raw)) == 64
    assert raw not in hash_key(raw)


@pytest.mark.parametrize(
    "addr",
    [
        "127.0.0.1",
        "10.0.0.5",
        "192.168.1.1",
        "169.254.169.254",
        "::1",
        "fe80::1",
        "::ffff:127.0.0.1",
        "0.0.0.0",
    ],
)
def test_internal_addresses_detected(addr):
    assert is_internal(addr)


def test_public_address_is_not_internal():
    assert not is_internal("93.184.216.34")


def test_signature_covers_timestamp_and_body():
    a = sign("s", "1", b"{}")
    assert a.startswith("sha256=") and a != sign("s", "2", b"{}") and a != sign("t", "1", b"{}")


@pytest.mark.parametrize(
    "text,seconds", [("90", 90), ("30m", 1800), ("2h", 7200), ("1.5d", 129600)]
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_bad_duration():
    with pytest.raises(click.BadParameter):
        parse_duration("soon")
