"""Job inputs given by URL: `https://…`, `http://…` (only with INPUT_ALLOW_HTTP) and
`s3://bucket/key` (only buckets listed in INPUT_S3_BUCKETS).

Submission validates the URL only, without fetching it: scheme, credentials in the URL, the s3
bucket, and (through `netguard`, the same rule webhooks use) that the host resolves to public
addresses unless INPUT_ALLOW_PRIVATE. Probing happens in the worker after the whole input is on
local disk, not at submission on a bounded prefix: probing a prefix would mean fetching at
submission, and an MP4 whose moov atom sits at the end cannot be probed from its beginning.

A URL input has no owner record; tenancy checks apply to local paths only, so anything that is
not one of the schemes above (`file://`, `ftp://`, …) is refused rather than read as a path.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from .errors import ValidationError
from .netguard import TargetRefused, TargetUnresolvable, checked_addresses

URL_SCHEMES = ("https", "http", "s3")


def is_url(value) -> bool:
    """True when `value` names a remote input (or tries to: any `scheme://`), so it must be
    judged by `validate_input_url` and never resolved as a storage path."""
    return isinstance(value, str) and "://" in value


def validate_input_url(url: str, settings, *, field: str = "input") -> None:
    """Refuse, with a ValidationError on `field`, every URL input refusable without fetching."""
    if len(url) > 2048:
        raise ValidationError(f"{field} URL is too long", field=field)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in URL_SCHEMES:
        raise ValidationError(
            f"{field} URL scheme must be https, http or s3, not {scheme or 'none'!r}", field=field
        )
    if scheme == "http" and not settings.input_allow_http:
        raise ValidationError(f"{field} http:// URLs are not allowed; use https", field=field)
    if "@" in parts.netloc:
        raise ValidationError(f"{field} URL must not carry credentials", field=field)
    if scheme == "s3":
        bucket, key = parts.netloc, parts.path.lstrip("/")
        if not bucket or not key:
            raise ValidationError(f"{field} must be s3://bucket/key", field=field)
        if bucket not in settings.input_s3_buckets:
            raise ValidationError(f"{field} bucket {bucket!r} is not allowed", field=field)
        return
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise ValidationError(f"{field} URL has an invalid port", field=field) from None
    if not parts.hostname:
        raise ValidationError(f"{field} URL has no host", field=field)
    try:
        checked_addresses(parts.hostname, port, allow_private=settings.input_allow_private)
    except TargetUnresolvable as exc:
        raise ValidationError(f"{field} URL host does not resolve: {exc}", field=field) from None
    except TargetRefused as exc:
        raise ValidationError(f"{field} URL {exc}; refused", field=field) from None
