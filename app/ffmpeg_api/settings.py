"""The service's configuration: every setting is an environment variable, declared once here.

`SETTINGS_DOC` is the documentation source: the README's configuration table is checked
against it by a test, so a variable cannot be added without being documented.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields


class SettingsError(ValueError):
    """An environment variable holds a value the service cannot use."""


def _setting(env: str, default, doc: str):
    return field(default=default, metadata={"env": env, "doc": doc})


def _parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {raw!r}")


@dataclass(frozen=True)
class Settings:
    database_url: str = _setting(
        "DATABASE_URL",
        "postgresql://ffmpeg_user@localhost/ffmpeg_api",
        "PostgreSQL connection URL (libpq syntax).",
    )
    database_pool_size: int = _setting(
        "DATABASE_POOL_SIZE", 10, "Maximum PostgreSQL connections per API process."
    )
    database_pool_timeout: float = _setting(
        "DATABASE_POOL_TIMEOUT",
        1.0,
        "Seconds a request waits for a PostgreSQL connection before it answers 503"
        " dependency_unavailable.",
    )
    redis_url: str = _setting("REDIS_URL", "redis://localhost:6379/0", "Redis connection URL.")
    storage_root: str = _setting(
        "STORAGE_ROOT",
        "/var/lib/ffmpeg-api/storage",
        "Directory holding uploads/, output/ and tmp/. Every path a client names is confined here.",
    )
    storage_backend: str = _setting(
        "STORAGE_BACKEND",
        "local",
        "Where uploads and outputs live: local (under STORAGE_ROOT) or s3 (S3_BUCKET).",
    )
    s3_bucket: str = _setting("S3_BUCKET", "", "Bucket of the s3 storage backend.")
    s3_prefix: str = _setting("S3_PREFIX", "", "Key prefix of the s3 backend inside S3_BUCKET.")
    s3_endpoint_url: str = _setting(
        "S3_ENDPOINT_URL", "", "S3 endpoint URL (empty: AWS's own for S3_REGION; MinIO, Ceph RGW)."
    )
    s3_region: str = _setting("S3_REGION", "", "S3 region (empty: boto3's default chain).")
    s3_addressing_style: str = _setting(
        "S3_ADDRESSING_STYLE", "auto", "S3 addressing style: auto, path or virtual."
    )
    output_url_ttl: int = _setting(
        "OUTPUT_URL_TTL", 900, "Seconds a presigned output URL (s3 backend) stays valid."
    )
    work_dir: str = _setting(
        "WORK_DIR",
        "",
        "Local scratch of the workers with the s3 backend: inputs are downloaded and outputs"
        " written here before upload (empty: STORAGE_ROOT/tmp).",
    )
    ffmpeg_bin: str = _setting("FFMPEG_BIN", "ffmpeg", "ffmpeg executable.")
    ffprobe_bin: str = _setting("FFPROBE_BIN", "ffprobe", "ffprobe executable.")
    worker_concurrency: int = _setting(
        "WORKER_CONCURRENCY",
        2,
        "RQ worker processes per host (read by the deployment; each process runs one job).",
    )
    ffmpeg_threads: int = _setting(
        "FFMPEG_THREADS", 0, "Threads per ffmpeg process (0 lets ffmpeg decide)."
    )
    max_upload_bytes: int = _setting(
        "MAX_UPLOAD_BYTES", 2 * 1024**3, "Largest accepted upload; larger answers 413."
    )
    max_json_bytes: int = _setting(
        "MAX_JSON_BYTES",
        1024**2,
        "Largest accepted JSON request body; larger answers 413 before the body is read.",
    )
    storage_quota_bytes_per_user: int = _setting(
        "STORAGE_QUOTA_BYTES_PER_USER",
        0,
        "Bytes a user may keep stored (uploads plus outputs still stored, on disk or in the"
        " bucket); over it uploads get 507. 0 = unlimited.",
    )
    storage_free_reserve_bytes: int = _setting(
        "STORAGE_FREE_RESERVE_BYTES",
        1024**3,
        "Free space the storage root keeps: an upload that would leave less answers 507"
        " (local backend; a bucket has no free space to keep).",
    )
    max_input_duration: float = _setting(
        "MAX_INPUT_DURATION", 4 * 3600.0, "Longest accepted input, in seconds."
    )
    max_input_pixels: int = _setting(
        "MAX_INPUT_PIXELS", 4096 * 2160, "Largest accepted input frame (width x height)."
    )
    max_output_pixels: int = _setting(
        "MAX_OUTPUT_PIXELS", 4096 * 2160, "Largest output frame a job may request."
    )
    max_output_pixel_rate: int = _setting(
        "MAX_OUTPUT_PIXEL_RATE",
        4096 * 2160 * 60,
        "Largest width x height x fps of each video output (the input's fps unless set);"
        " 0 = unlimited.",
    )
    max_active_jobs_per_key: int = _setting(
        "MAX_ACTIVE_JOBS_PER_KEY",
        0,
        "Queued plus processing jobs one API key may have; more answers 429. 0 = unlimited.",
    )
    max_active_jobs_per_user: int = _setting(
        "MAX_ACTIVE_JOBS_PER_USER",
        50,
        "Queued plus processing jobs one user (all keys) may have; more answers 429."
        " 0 = unlimited.",
    )
    output_seconds_per_day: float = _setting(
        "OUTPUT_SECONDS_PER_DAY",
        86400.0,
        "Encoded output-seconds one user may submit per rolling 24 h; over it answers 429."
        " 0 = unlimited.",
    )
    job_timeout_base: float = _setting(
        "JOB_TIMEOUT_BASE", 60.0, "Seconds every job step gets before its work-scaled share."
    )
    job_timeout_factor: float = _setting(
        "JOB_TIMEOUT_FACTOR",
        10.0,
        "Seconds allowed per planned second of 1080p30-equivalent work, per step, on top of"
        " the base.",
    )
    job_max_retries: int = _setting(
        "JOB_MAX_RETRIES", 3, "Times a job lost with its worker is requeued before it fails."
    )
    job_heartbeat_interval: float = _setting(
        "JOB_HEARTBEAT_INTERVAL", 2.0, "Seconds between a running job's heartbeats."
    )
    job_heartbeat_timeout: float = _setting(
        "JOB_HEARTBEAT_TIMEOUT",
        60.0,
        "A processing job whose heartbeat is older than this is considered lost and requeued.",
    )
    orphan_scan_interval: float = _setting(
        "ORPHAN_SCAN_INTERVAL", 15.0, "Seconds between each worker's scan for lost jobs."
    )
    rate_limit_per_minute: int = _setting(
        "RATE_LIMIT_PER_MINUTE", 600, "Requests per minute per API key (keys may override)."
    )
    global_rate_limit_per_minute: int = _setting(
        "GLOBAL_RATE_LIMIT_PER_MINUTE",
        0,
        "Requests per minute for the whole service (0 = unlimited); the admin API can change it.",
    )
    ddos_ip_rate_limit_per_minute: int = _setting(
        "DDOS_IP_RATE_LIMIT_PER_MINUTE",
        60,
        "Requests per minute per client IP while DDoS-protection mode is on.",
    )
    trusted_proxies: tuple = _setting(
        "TRUSTED_PROXIES",
        ("127.0.0.1/32", "::1/128"),
        "Comma-separated CIDRs whose X-Forwarded-For and X-Request-Start are believed.",
    )
    webhook_secret: str = _setting(
        "WEBHOOK_SECRET", "", "HMAC-SHA256 key signing webhook bodies (required to send webhooks)."
    )
    webhook_allow_private: bool = _setting(
        "WEBHOOK_ALLOW_PRIVATE",
        False,
        "Allow webhook URLs resolving to loopback, private or link-local addresses.",
    )
    input_allow_http: bool = _setting(
        "INPUT_ALLOW_HTTP", False, "Accept plain http:// job inputs (https:// is always accepted)."
    )
    input_s3_buckets: tuple = _setting(
        "INPUT_S3_BUCKETS",
        (),
        "Comma-separated S3 buckets a job input may name as s3://bucket/key (none: s3:// refused).",
    )
    input_allow_private: bool = _setting(
        "INPUT_ALLOW_PRIVATE",
        False,
        "Allow input URLs resolving to loopback, private or link-local addresses (tests, labs).",
    )
    input_fetch_timeout: float = _setting(
        "INPUT_FETCH_TIMEOUT", 300.0, "Seconds allowed to download a URL input (whole transfer)."
    )
    webhook_max_attempts: int = _setting(
        "WEBHOOK_MAX_ATTEMPTS", 5, "Delivery attempts per webhook, with exponential backoff."
    )
    webhook_backoff: float = _setting(
        "WEBHOOK_BACKOFF", 2.0, "First retry delay of a webhook, in seconds (doubles each time)."
    )
    gpu_device: str = _setting(
        "GPU_DEVICE", "0", "CUDA device index probed and used by GPU workers."
    )
    access_log: str = _setting(
        "ACCESS_LOG", "-", "Where JSON access lines go: '-' for stdout, or a file path."
    )
    log_level: str = _setting("LOG_LEVEL", "INFO", "Application log level.")
    metrics_token: str = _setting(
        "METRICS_TOKEN", "", "If set, /metrics requires 'Authorization: Bearer <token>'."
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        environ = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            raw = environ.get(f.metadata["env"])
            if raw is None:
                continue
            try:
                values[f.name] = _convert(f.default, raw)
            except ValueError as exc:
                raise SettingsError(f"{f.metadata['env']}: {exc}") from None
        settings = cls(**values)
        settings.trusted_networks()  # validate early
        settings.check_storage()
        return settings

    def check_storage(self) -> None:
        if self.storage_backend not in ("local", "s3"):
            raise SettingsError(f"STORAGE_BACKEND: not local or s3: {self.storage_backend!r}")
        if self.s3_addressing_style not in ("auto", "path", "virtual"):
            raise SettingsError(
                f"S3_ADDRESSING_STYLE: not auto, path or virtual: {self.s3_addressing_style!r}"
            )
        if self.storage_backend == "s3" and not self.s3_bucket:
            raise SettingsError("STORAGE_BACKEND=s3 needs S3_BUCKET")

    def trusted_networks(self) -> list:
        try:
            return [ipaddress.ip_network(c.strip(), strict=False) for c in self.trusted_proxies]
        except ValueError as exc:
            raise SettingsError(f"TRUSTED_PROXIES: {exc}") from None

    @property
    def uploads_dir(self) -> str:
        return os.path.join(self.storage_root, "uploads")

    @property
    def output_dir(self) -> str:
        return os.path.join(self.storage_root, "output")

    @property
    def tmp_dir(self) -> str:
        return os.path.join(self.storage_root, "tmp")

    @property
    def scratch_dir(self) -> str:
        """Where work happens on this host: a job's work directories, spooled request bodies,
        downloaded inputs. WORK_DIR with the s3 backend (the local disk that fills now);
        STORAGE_ROOT/tmp otherwise, on the storage root's filesystem so a finished work
        directory is published by one rename."""
        if self.storage_backend == "s3" and self.work_dir:
            return self.work_dir
        return self.tmp_dir


def _convert(default, raw: str):
    if isinstance(default, bool):
        return _parse_bool(raw)
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    if isinstance(default, tuple):
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    return raw


def settings_doc() -> list[tuple[str, str, str]]:
    """(variable, default, description) for every setting, in declaration order."""
    rows = []
    for f in fields(Settings):
        default = f.default
        if isinstance(default, tuple):
            default = ",".join(default)
        elif isinstance(default, bool):
            default = str(default).lower()
        rows.append((f.metadata["env"], str(default), f.metadata["doc"]))
    return rows
