"""The submission-time rules for job inputs given by URL (remote_input.validate_input_url).

Names that resolve are IP literals or `localhost`, so no test depends on outside DNS."""

import pytest

from ffmpeg_api.errors import ValidationError
from ffmpeg_api.remote_input import input_name, is_url, validate_input_url
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
    assert is_url("HTTPS://example.com/a.mp4")
    assert is_url("s3://media-in/a.mp4")
    assert not is_url("uploads/a.mp4")
    assert not is_url("uploads/a://b.mp4")
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


@pytest.mark.parametrize(
    "url", ["https://8.8.8.8/a b.mp4", "https://8.8.8.8/a\nb.mp4", "https://8.8.8.8/\x00"]
)
def test_spaces_and_control_characters_are_refused(url):
    assert "control characters" in refused(url, settings())


def test_a_malformed_url_is_refused():
    assert "malformed" in refused("https://[::1/a.mp4", settings())


def test_s3_keys_are_literal_and_s3_credentials_are_refused():
    s = settings(INPUT_S3_BUCKETS="media-in")
    validate_input_url("s3://media-in/odd?name#1.mp4", s)
    assert "credentials" in refused("s3://key:secret@media-in/a.mp4", s)


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("https://h.example/a/b/My%20Clip.mp4?sig=x#t", "My_Clip.mp4"),
        ("https://h.example/..%2F..%2Fetc%2Fpasswd", "passwd"),
        ("https://h.example/..", "input"),
        ("https://h.example/", "input"),
        ("https://h.example", "input"),
        ("s3://media-in/dir/clip.mov", "clip.mov"),
        ("s3://media-in/odd?name#1.mp4", "odd_name_1.mp4"),
        ("s3://media-in/dir/", "input"),
    ],
)
def test_the_downloaded_file_is_named_safely_after_the_url_path(url, name):
    assert input_name(url) == name


@pytest.mark.parametrize(
    ("code", "status", "reason"),
    [
        ("NoSuchKey", 404, "s3://media-in/a.mp4 does not exist"),
        ("404", 404, "s3://media-in/a.mp4 does not exist"),
        ("NoSuchBucket", 404, "bucket 'media-in' does not exist"),
        ("AccessDenied", 403, "s3://media-in/a.mp4: access denied"),
        ("403", 403, "s3://media-in/a.mp4: access denied"),
        ("PreconditionFailed", 412, "changed during the download"),
        ("SlowDown", 503, "S3 answered SlowDown"),
    ],
)
def test_s3_errors_read_as_reasons_a_user_understands(code, status, reason):
    """S3's answers as boto3 reports them (HEAD has no body, so only the status says 404)."""
    from botocore.exceptions import ClientError

    from ffmpeg_api.remote_input import _s3_reason

    exc = ClientError(
        {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "HeadObject"
    )
    assert reason in _s3_reason("s3://media-in/a.mp4", "media-in", exc)
