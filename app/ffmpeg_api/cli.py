"""`ffmpeg-api`: the admin CLI, and the one implementation the Ansible modules wrap.

Conventions every command keeps:
- `--json` prints one JSON document on stdout (nothing else there); errors go to stderr.
- Commands that change something take `--dry-run` and then report exactly what they would do,
  with the same `changed` flag the real run would report.
- Exit codes: 0 ok, 1 failure, 2 bad usage (click's own code for usage errors).
"""

from __future__ import annotations

import functools
import json
import sys
from datetime import UTC, date, datetime
from decimal import Decimal
from uuid import UUID

import click

from . import durations
from .errors import ApiError, ValidationError
from .settings import Settings, SettingsError


def parse_duration(text: str) -> float:
    try:
        return durations.parse(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


class DurationType(click.ParamType):
    """A duration (see `durations`); with `minimum`, shorter ones are refused."""

    name = "duration"

    def __init__(self, minimum: float | None = None):
        self.minimum = minimum

    def convert(self, value, param, ctx):
        try:
            seconds = float(value) if isinstance(value, (int, float)) else parse_duration(value)
        except click.BadParameter as exc:
            self.fail(str(exc), param, ctx)
        if self.minimum is not None and seconds < self.minimum:
            self.fail(f"{value!r} is shorter than {self.minimum:g} s", param, ctx)
        return seconds


DURATION_TYPE = DurationType()


def _default(o):
    if isinstance(o, (datetime, date)):
        return o.isoformat()
    if isinstance(o, (UUID, Decimal)):
        return str(o) if isinstance(o, UUID) else float(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def emit(data, as_json: bool, human=None) -> None:
    if as_json:
        click.echo(json.dumps(data, default=_default, indent=2, sort_keys=False))
    elif human is not None:
        human(data)
    else:
        click.echo(json.dumps(data, default=_default, indent=2))


def command(group, name=None, *, changes: bool = False):
    """Register a command with the shared --json (and --dry-run) options and error handling."""

    def decorator(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            as_json = kwargs.get("as_json", False)
            try:
                return fn(*args, **kwargs)
            except (ApiError, SettingsError) as exc:
                code = 2 if isinstance(exc, (ValidationError, SettingsError)) else 1
                if as_json:
                    body = (
                        exc.to_dict()
                        if isinstance(exc, ApiError)
                        else {"error": {"code": "settings", "message": str(exc)}}
                    )
                    click.echo(json.dumps({"failed": True, **body}))
                click.echo(f"error: {getattr(exc, 'message', str(exc))}", err=True)
                sys.exit(code)
            except click.exceptions.Exit:
                raise
            except click.ClickException:
                raise
            except Exception as exc:
                if as_json:
                    click.echo(
                        json.dumps(
                            {
                                "failed": True,
                                "error": {"code": exc.__class__.__name__, "message": str(exc)},
                            }
                        )
                    )
                click.echo(f"error: {exc.__class__.__name__}: {exc}", err=True)
                sys.exit(1)

        wrapper = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")(
            wrapper
        )
        if changes:
            wrapper = click.option(
                "--dry-run", is_flag=True, help="Report what would change; change nothing."
            )(wrapper)
        return group.command(name)(wrapper)

    return decorator


def settings() -> Settings:
    return Settings.from_env()


def conn():
    from . import db

    return db.connect(settings().database_url)


def rconn():
    from .redis_conn import get_redis

    return get_redis(settings().redis_url)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ffmpeg-api")
def main():
    """Administer an FFmpeg API installation (configuration comes from the environment)."""


# --- db ---------------------------------------------------------------------------------


@main.group()
def db():
    """Database schema."""


@command(db, "upgrade", changes=True)
def db_upgrade(as_json, dry_run):
    """Apply pending migrations (under an advisory lock; safe to run on many hosts at once)."""
    from . import db as dbmod

    done = dbmod.upgrade(settings().database_url, dry_run=dry_run)
    emit(
        {"changed": bool(done), "applied" if not dry_run else "pending": done, "dry_run": dry_run},
        as_json,
        lambda d: click.echo(
            f"{'would apply' if dry_run else 'applied'}: "
            f"{', '.join(done) or 'nothing (up to date)'}"
        ),
    )


@command(db, "status")
def db_status(as_json):
    """Show applied and pending migrations."""
    from . import db as dbmod

    pending = dbmod.pending_migrations(settings().database_url)
    emit(
        {"pending": pending, "up_to_date": not pending},
        as_json,
        lambda d: click.echo("up to date" if not pending else f"pending: {', '.join(pending)}"),
    )


# --- health -----------------------------------------------------------------------------


def measure_http(url: str, samples: int, timeout: float, max_response_ms: float) -> dict:
    """The `http` component: `samples` GETs of `url`, which must answer 200 within
    `max_response_ms` on average; otherwise the component is in error, saying why."""
    import time
    import urllib.error
    import urllib.request

    times, code, error = [], None, None
    for _ in range(max(1, samples)):
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (operator's URL)
                resp.read()
                code = resp.status
        except urllib.error.HTTPError as exc:
            code = exc.code
        except Exception as exc:  # refused, timeout: reported, not raised
            error = f"HTTP {exc.__class__.__name__} ({exc})"
            break
        times.append(round((time.perf_counter() - started) * 1000, 2))
    avg = round(sum(times) / len(times), 2) if times else None
    if error is None and code != 200:
        error = f"HTTP status {code}"
    if error is None and avg is not None and avg > max_response_ms:
        error = f"slow responses: {avg:.0f} ms average (limit {max_response_ms:.0f} ms)"
    comp = {
        "status": "error" if error else "ok",
        "url": url,
        "http_status": code,
        "response_ms": times,
        "avg_ms": avg,
        "max_ms": max(times) if times else None,
        "ms": round(sum(times), 2),
    }
    if error:
        comp["error"] = error
    return comp


@command(main, "health")
@click.option(
    "--deep",
    is_flag=True,
    help="Also database connections by state and the jobs each worker is processing.",
)
@click.option(
    "--ignore",
    multiple=True,
    metavar="COMPONENT",
    help="Leave this component out of the verdict and the problems (reported all the same).",
)
@click.option("--url", default=None, help="Also time GETs of this health URL (component http).")
@click.option("--samples", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True)
@click.option("--max-response-ms", type=click.FloatRange(min=0), default=2000.0, show_default=True)
def health_cmd(as_json, deep, ignore, url, samples, timeout, max_response_ms):
    """Check every component from this host (what GET /health reports, without HTTP).

    Exits 0 whenever the report was produced, healthy or not: read `status` (healthy,
    degraded, unhealthy; `healthy` is false only when unhealthy), `problems` ({component,
    message} per component not ok) and `summary` (one line).
    """
    from .api import health as healthmod

    s = settings()
    report = healthmod.check_all(s)
    if deep:
        report["components"].update(healthmod.check_deep(s))
    if url:
        report["components"]["http"] = measure_http(url, samples, timeout, max_response_ms)
    counted = {k: v for k, v in report["components"].items() if k not in ignore}
    report["status"] = healthmod.verdict(counted)
    report["healthy"] = report["status"] != "unhealthy"
    report["deep"] = deep
    report["ignored"] = sorted(ignore)
    report["problems"] = healthmod.summarize({"components": counted})
    messages = "; ".join(p["message"] for p in report["problems"])
    report["summary"] = report["status"] + (f": {messages}" if messages else "")

    def human(d):
        click.echo(d["summary"])
        for name, comp in d["components"].items():
            click.echo(f"  {name:<12}{comp['status']:<9}{comp['ms']:>8} ms")

    emit(report, as_json, human)


# --- keys -------------------------------------------------------------------------------


@main.group()
def keys():
    """API keys."""


def _key_table(rows):
    click.echo(
        f"{'ID':<14}{'USER':<16}{'NAME':<20}{'ADMIN':<7}{'ACTIVE':<8}{'REQUESTS':>10}  LAST USED"
    )
    for r in rows:
        click.echo(
            f"{r['id']:<14}{r['user_id'][:15]:<16}{r['name'][:19]:<20}"
            f"{'yes' if r['is_admin'] else 'no':<7}{'yes' if r['active'] else 'no':<8}"
            f"{r['request_count']:>10}  {r['last_used_at'] or '-'}"
        )


@command(keys, "create", changes=True)
@click.option("--name", required=True)
@click.option("--user", "user_id", required=True)
@click.option("--admin", is_flag=True)
@click.option(
    "--rate-limit",
    type=click.IntRange(min=0),
    default=None,
    help="Requests per minute for this key (default: RATE_LIMIT_PER_MINUTE).",
)
def keys_create(as_json, dry_run, name, user_id, admin, rate_limit):
    """Create a key. The raw key is printed once; only its hash is stored."""
    from . import keys as keymod

    if dry_run:
        emit(
            {"changed": True, "dry_run": True, "name": name, "user_id": user_id, "is_admin": admin},
            as_json,
        )
        return
    with conn() as c:
        key, raw = keymod.create(
            c, name=name, user_id=user_id, is_admin=admin, rate_limit=rate_limit
        )
    emit(
        {"changed": True, **key, "api_key": raw},
        as_json,
        lambda d: click.echo(
            f"created key {key['id']} for {user_id}\n{raw}\n"
            "(store it now: it cannot be shown again)"
        ),
    )


@command(keys, "list")
@click.option("--sort", type=click.Choice(["recent", "requests", "created"]), default="recent")
@click.option("--user", "user_id")
@click.option(
    "--used-within",
    type=DURATION_TYPE,
    default=None,
    help="Only keys used within this long (e.g. 1h).",
)
@click.option("--active-only", is_flag=True)
def keys_list(as_json, sort, user_id, used_within, active_only):
    """List keys, most recently used (or most used) first."""
    from . import keys as keymod

    with conn() as c:
        keymod.flush_usage(c, rconn())
        rows = keymod.list_keys(
            c,
            sort=sort,
            user_id=user_id,
            used_within_hours=used_within / 3600 if used_within else None,
            include_revoked=not active_only,
        )
    emit({"keys": rows}, as_json, lambda d: _key_table(rows))


@command(keys, "usage")
@click.argument("key_id")
def keys_usage(as_json, key_id):
    """Requests, last use and the last 24 h of jobs and output bytes for one key."""
    from . import keys as keymod

    with conn() as c:
        keymod.flush_usage(c, rconn())
        data = keymod.usage(c, key_id)
    emit(data, as_json)


@command(keys, "revoke", changes=True)
@click.argument("key_id")
@click.option("--reason", default="")
def keys_revoke(as_json, dry_run, key_id, reason):
    """Revoke a key: it answers 401 from the next request on."""
    from . import keys as keymod

    with conn() as c:
        out = keymod.revoke(c, key_id, reason=reason, dry_run=dry_run)
    if out["changed"] and not dry_run:
        keymod.bump_epoch(rconn())
    emit(
        {**out, "dry_run": dry_run},
        as_json,
        lambda d: click.echo(
            ("would revoke " if dry_run else "revoked ") + key_id
            if out["changed"]
            else f"{key_id} was already revoked"
        ),
    )


class TimestampType(click.ParamType):
    """An ISO 8601 moment; without an offset it is taken as UTC."""

    name = "timestamp"

    def convert(self, value, param, ctx):
        if isinstance(value, datetime):
            return value
        try:
            moment = datetime.fromisoformat(str(value).strip())
        except ValueError:
            self.fail(f"{value!r} is not an ISO 8601 time like 2026-11-29T10:00:00Z", param, ctx)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment


@command(keys, "rotate-user", changes=True)
@click.argument("user_id")
@click.option(
    "--created-before",
    type=TimestampType(),
    default=None,
    help="Only replace keys issued before this time (ISO 8601); a rerun then changes nothing.",
)
def keys_rotate_user(as_json, dry_run, user_id, created_before):
    """Revoke every active key of a user and issue a replacement for each."""
    from . import keys as keymod

    with conn() as c:
        out = keymod.rotate_user(c, user_id, dry_run=dry_run, created_before=created_before)
    if out["changed"] and not dry_run:
        keymod.bump_epoch(rconn())
    emit({**out, "dry_run": dry_run}, as_json)


@command(keys, "monitor", changes=True)
@click.argument("key_id")
@click.option("--off", is_flag=True, help="Stop flagging this key's requests.")
def keys_monitor(as_json, dry_run, key_id, off):
    """Flag a key so every request it makes is marked `monitored` in the access log."""
    from . import keys as keymod

    with conn() as c:
        out = keymod.set_monitored(c, key_id, not off, dry_run=dry_run)
    if out["changed"] and not dry_run:
        keymod.bump_epoch(rconn())
    emit({**out, "dry_run": dry_run}, as_json)


# --- jobs -------------------------------------------------------------------------------


@main.group()
def jobs():
    """Jobs: recovery, statistics, cancellation."""


@command(jobs, "requeue-stuck", changes=True)
@click.option(
    "--older-than",
    type=DURATION_TYPE,
    default="1h",
    show_default=True,
    help="Requeue processing jobs whose worker has not reported for this long.",
)
def jobs_requeue_stuck(as_json, dry_run, older_than):
    """Requeue processing jobs whose worker stopped reporting (bounded retries)."""
    from . import jobs as jobmod

    with conn() as c:
        out = jobmod.requeue_stuck(c, rconn(), settings(), older_than, dry_run=dry_run)
    emit(out, as_json)


@command(jobs, "reconcile", changes=True)
def jobs_reconcile(as_json, dry_run):
    """Enqueue every queued job that Redis has lost (PostgreSQL is the source of truth)."""
    from . import jobs as jobmod

    with conn() as c:
        out = jobmod.reconcile(c, rconn(), settings(), dry_run=dry_run)
    emit(out, as_json)


@command(jobs, "stats")
@click.option("--since", type=DURATION_TYPE, default="24h", show_default=True)
def jobs_stats(as_json, since):
    """Job counts by status, and count / average / p95 processing time by operation."""
    from . import jobs as jobmod

    with conn() as c:
        out = jobmod.stats(c, since_hours=since / 3600)

    def human(d):
        click.echo("  ".join(f"{k}={v}" for k, v in d["by_status"].items()))
        click.echo(f"{'OPERATION':<16}{'COUNT':>8}{'AVG s':>10}{'P95 s':>10}")
        for r in d["by_operation"]:
            click.echo(
                f"{r['operation']:<16}{r['count']:>8}{r['avg_seconds'] or '-':>10}"
                f"{r['p95_seconds'] or '-':>10}"
            )

    emit(out, as_json, human)


@command(jobs, "cancel", changes=True)
@click.argument("job_id")
def jobs_cancel(as_json, dry_run, job_id):
    """Cancel a queued or processing job (a running ffmpeg stops within 2 s)."""
    from . import jobs as jobmod

    with conn() as c:
        out = jobmod.cancel(c, rconn(), job_id, dry_run=dry_run)
    emit({"changed": out["changed"], "dry_run": dry_run, "job": jobmod.public(out["job"])}, as_json)


# --- maintenance ------------------------------------------------------------------------


@main.group()
def maintenance():
    """Maintenance mode (every endpoint but health answers 503)."""


MAINTENANCE_OFF = {"enabled": False, "reason": None, "since": None, "ttl": None}


def _maintenance_view(status: dict) -> dict:
    """What a diff shows of a maintenance status (not `since`, which every switch-on resets)."""
    return {k: status.get(k) for k in ("enabled", "reason", "ttl")}


def _maintenance_result(before: dict, after: dict, changed: bool, dry_run: bool) -> dict:
    return {
        "changed": changed,
        "dry_run": dry_run,
        **after,
        "diff": {"before": _maintenance_view(before), "after": _maintenance_view(after)},
    }


def maintenance_plan(before: dict, reason: str | None, ttl: float | None, extend_ttl: bool):
    """The rule of "maintenance on": (changed, reason to set).

    A mode already on with the same reason is left alone when no TTL is asked for, or when it
    already has an expiry and `extend_ttl` is false: a rerun does not push the expiry further
    out. Without `reason`, the reason of a mode already on is kept."""
    wanted_reason = reason if reason is not None else (before["reason"] or "")
    unchanged = (
        before["enabled"]
        and (before["reason"] or "") == wanted_reason
        and (ttl is None or (before["ttl"] is not None and not extend_ttl))
    )
    return not unchanged, wanted_reason


@command(maintenance, "on", changes=True)
@click.option(
    "--ttl", type=DurationType(minimum=1), default=None, help="Lift it by itself after this."
)
@click.option(
    "--reason", default=None, help="Why (left out: the reason of a mode already on is kept)."
)
@click.option(
    "--extend-ttl/--keep-ttl",
    default=False,
    show_default=True,
    help="With --ttl on a mode already on as wanted: restart its expiry, or leave it running.",
)
def maintenance_on(as_json, dry_run, ttl, reason, extend_ttl):
    """Switch maintenance mode on (a rerun with the same reason and a TTL changes nothing)."""
    from . import control

    before = control.maintenance_status(rconn())
    changed, wanted_reason = maintenance_plan(before, reason, ttl, extend_ttl)
    ttl_seconds = int(ttl) if ttl else None
    if not changed:
        after = before
    elif dry_run:
        after = {**before, "enabled": True, "reason": wanted_reason, "ttl": ttl_seconds}
    else:
        after = control.maintenance_on(rconn(), reason=wanted_reason, ttl=ttl_seconds)
    emit(_maintenance_result(before, after, changed, dry_run), as_json)


@command(maintenance, "off", changes=True)
def maintenance_off(as_json, dry_run):
    """Switch maintenance mode off."""
    from . import control

    before = control.maintenance_status(rconn())
    changed = before["enabled"]
    if not changed:
        after = before
    else:
        after = MAINTENANCE_OFF if dry_run else control.maintenance_off(rconn())
    emit(_maintenance_result(before, after, changed, dry_run), as_json)


@command(maintenance, "status")
def maintenance_status(as_json):
    from . import control

    emit(control.maintenance_status(rconn()), as_json)


# --- rate limits ------------------------------------------------------------------------


@main.group()
def ratelimit():
    """Global rate limit and DDoS-protection mode."""


def _limits():
    from . import control

    s = settings()
    return {
        "global_per_minute": control.global_limit(rconn(), s.global_rate_limit_per_minute),
        "per_key_default_per_minute": s.rate_limit_per_minute,
        "ddos_protection": control.ddos_enabled(rconn()),
        "ddos_ip_per_minute": s.ddos_ip_rate_limit_per_minute,
    }


@command(ratelimit, "get")
def ratelimit_get(as_json):
    emit(_limits(), as_json)


def _apply_limits(as_json, dry_run, per_minute, ddos):
    """The rule of both commands: a limit or mode already as wanted is no change."""
    from . import control

    before = _limits()
    after = dict(before)
    if per_minute is not None:
        after["global_per_minute"] = per_minute
    if ddos is not None:
        after["ddos_protection"] = ddos
    changed = after != before
    if changed and not dry_run:
        if after["global_per_minute"] != before["global_per_minute"]:
            control.set_global_limit(rconn(), per_minute)
        if after["ddos_protection"] != before["ddos_protection"]:
            control.set_ddos(rconn(), ddos)
        after = _limits()
    emit(
        {
            "changed": changed,
            "dry_run": dry_run,
            **after,
            "diff": {"before": before, "after": after},
        },
        as_json,
    )


@command(ratelimit, "set", changes=True)
@click.argument("per_minute", type=click.IntRange(min=0), required=False)
@click.option(
    "--ddos",
    type=click.Choice(["on", "off"]),
    default=None,
    help="Also switch DDoS-protection mode (one call, one answer).",
)
def ratelimit_set(as_json, dry_run, per_minute, ddos):
    """Set the service-wide limit in requests per minute (0 = unlimited)."""
    if per_minute is None and ddos is None:
        raise click.UsageError("say what to set: PER_MINUTE and/or --ddos on|off")
    _apply_limits(as_json, dry_run, per_minute, None if ddos is None else ddos == "on")


@command(ratelimit, "ddos", changes=True)
@click.argument("state", type=click.Choice(["on", "off"]))
def ratelimit_ddos(as_json, dry_run, state):
    """Switch DDoS-protection mode (a per-client-IP limit on every request)."""
    _apply_limits(as_json, dry_run, None, state == "on")


# --- storage ----------------------------------------------------------------------------


@main.group()
def storage():
    """Storage usage and cleanup."""


@command(storage, "usage")
@click.option("--top", type=click.IntRange(min=1, max=1000), default=20, show_default=True)
def storage_usage(as_json, top):
    """Disk figures and the largest entries under the storage root.

    With STORAGE_BACKEND=s3: bytes and objects of uploads/, output/ and tmp/ in the bucket,
    its largest entries, and the disk figures of this host's scratch directory (WORK_DIR).
    """
    from . import mediastore
    from . import storage as st

    s = settings()
    if s.storage_backend == "s3":
        emit(st.s3_usage(mediastore.store_for(s).bucket, s.scratch_dir, top=top), as_json)
    else:
        emit(st.usage(s.storage_root, top=top), as_json)


@command(storage, "cleanup", changes=True)
@click.option(
    "--tmp-older-than",
    type=DURATION_TYPE,
    default=None,
    help="Remove tmp/ entries untouched for this long (running jobs are kept); with s3 also"
    " the scratch directory's entries and multipart uploads begun before then.",
)
@click.option(
    "--orphans",
    is_flag=True,
    help="Remove outputs whose job is gone, failed or cancelled, and the records of uploads"
    " whose file is gone.",
)
def storage_cleanup(as_json, dry_run, tmp_older_than, orphans):
    """Remove temporary files and orphaned job outputs (in the bucket with STORAGE_BACKEND=s3,
    a thousand keys per listing and per delete)."""
    from . import housekeeping

    if tmp_older_than is None and not orphans:
        raise click.UsageError("say what to clean: --tmp-older-than DURATION and/or --orphans")
    with conn() as c:
        out = housekeeping.cleanup(
            c, settings(), tmp_older_than=tmp_older_than, orphans=orphans, dry_run=dry_run
        )
    emit(out, as_json)


# --- worker -----------------------------------------------------------------------------


@command(main, "worker")
@click.option("--kind", type=click.Choice(["cpu", "gpu"]), default="cpu", show_default=True)
@click.option("--burst", is_flag=True, help="Exit when the queues are empty.")
@click.option("--name", default=None, help="Worker name (default: host.pid.kind).")
def worker_cmd(as_json, kind, burst, name):
    """Run an RQ worker: cpu listens on high, default, low; gpu on gpu."""
    import logging

    from .worker import run_worker

    s = settings()
    logging.basicConfig(level=s.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run_worker(s, kind, burst=burst, name=name)
    except RuntimeError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
