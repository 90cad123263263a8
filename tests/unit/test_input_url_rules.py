"""The submission-time rules for job inputs given by URL (remote_input.validate_input_url).

Names that resolve are IP literals or `localhost`, so no test depends on outside DNS."""

import pytest

from ffmpeg_api.errors import ValidationError
from ffmpeg_api.remote_input import is_url, validate_input_url
from ffmpeg_api.settings import Settings


def settings(**env):
    return Settings.from_env(env)


def refused(url, s):
    with pytest.raises(ValidationError) as exc:
        validate_input_url(url, s)
    assert exc.value.field == "input"
    return str(exc.value)


def test_remote_inputs_are_told_apart_from_storage_paths():
    assert is_url("https://example.com/a.mp4")
    assert is_url("file:///etc/passwd")
    assert not is_url("uploads/a.mp4")
    assert not is_url(None)


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://8.8.8.8/a.mp4", "gopher://8.8.8.8/", "://x", "data://x"]
)
def test_schemes_other_than_https_http_s3_are_refused(url):
    assert "scheme" in refused(url, settings(INPUT_ALLOW_HTTP="true", INPUT_ALLOW_PRIVATE="true"))


def test_http_needs_input_allow_http():
    assert "http://" in refused("http://8.8.8.8/a.mp4", settings())
    validate_input_url("http://8.8.8.8/a.mp4", settings(INPUT_ALLOW_HTTP="true"))


def test_https_to_a_public_address_is_accepted_without_fetching():
    validate_input_url("https://8.8.8.8:8443/clip.mp4?x=1", settings())


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/a.mp4",
        "https://169.254.169.254/latest/meta-data/",
        "https://[::ffff:127.0.0.1]/a.mp4",
        "https://[::1]/a.mp4",
        "https://10.1.2.3/a.mp4",
        "https://localhost/a.mp4",
        "https://0.0.0.0/a.mp4",
    ],
)
def test_internal_addresses_are_refused(url):
    assert "internal address" in refused(url, settings())


def test_input_allow_private_lets_loopback_through():
    validate_input_url("https://127.0.0.1:9/a.mp4", settings(INPUT_ALLOW_PRIVATE="true"))


def test_credentials_in_the_url_are_refused():
    assert "credentials" in refused("https://user:pw@8.8.8.8/a.mp4", settings())
    assert "credentials" in refused("https://user@8.8.8.8/a.mp4", settings())


def test_bad_port_and_missing_host_are_refused():
    assert "port" in refused("https://8.8.8.8:99999/a.mp4", settings())
    assert "host" in refused("https:///a.mp4", settings())


def test_s3_bucket_must_be_listed():
    s = settings(INPUT_S3_BUCKETS="media-in, other")
    validate_input_url("s3://media-in/clips/a.mp4", s)
    assert "not allowed" in refused("s3://secret/a.mp4", s)
    assert "not allowed" in refused("s3://media-in/a.mp4", settings())
    assert "s3://bucket/key" in refused("s3://media-in/", s)


def test_unresolvable_host_is_refused():
    assert "does not resolve" in refused("https://no-such-host.invalid/a.mp4", settings())
