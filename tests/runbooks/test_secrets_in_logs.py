"""No key or password of a run reaches a host log or the run's own record (issue 14, item 8).

After a deploy (the stack fixture) and runbook runs that use the live secrets (the smoke test
sends its API key in four requests; the health check and the diagnostics read the service's
credentials), every file under /var/log (rotated and gzipped ones too) and the output of every
playbook run of this test are searched for every secret the deployment holds: the generated
passwords and keys in var/secrets/, the secrets of the service's environment file, and any raw
API key (fk_<id>_<secret>) at all. Lines stamped before this pytest session began are left out:
they are earlier runs' (this machine may have run an older release), not this run's.

Without `no_log`, a module logs its arguments to syslog ("Invoked with ... X-API-Key: ..."),
which rsyslog (installed for HAProxy's access log) writes to /var/log/syslog and user.log.
"""

from __future__ import annotations

import calendar
import gzip
import os
import re
import time

from runbook_helpers import REPO, SESSION_STARTED, playbook, service_env

LOG_ROOT = "/var/log"
SECRETS_DIR = os.path.join(REPO, "var", "secrets")
# Every playbook run's record (the ffmpeg_api.ops.runbook_record callback), and the bundles the
# diagnostics runbook collects.
RUN_RECORDS = [
    os.path.join(REPO, "var", "runbook-records"),
    os.path.join(REPO, "var", "diagnostics"),
]
# Raw API keys as keys.create makes them (a key id, then 32 random bytes, URL-safe base64).
RAW_KEY = re.compile(rb"fk_[a-z0-9]+_[A-Za-z0-9_-]{43}")
SECRET_SETTINGS = ("METRICS_TOKEN", "WEBHOOK_SECRET")
URL_SETTINGS = ("DATABASE_URL", "REDIS_URL")
MIN_SECRET_LENGTH = 12  # shorter values would match by chance
# A log line's leading time stamp: syslog's ISO 8601, PostgreSQL's and supervisor's
# "YYYY-MM-DD HH:MM:SS" (this machine's logs are in UTC).
STAMP = re.compile(rb"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})")


def _secrets(env: dict) -> dict[str, bytes]:
    found = {}
    for name in sorted(os.listdir(SECRETS_DIR)):
        path = os.path.join(SECRETS_DIR, name)
        if os.path.isfile(path):
            with open(path, "rb") as fh:
                words = fh.read().split()
            if words:
                found[f"var/secrets/{name}"] = words[0]
    for name in SECRET_SETTINGS:
        if env.get(name):
            found[name] = env[name].encode()
    for name in URL_SETTINGS:
        m = re.match(r"^[a-z]+://[^:/@]*:([^@]+)@", env.get(name, ""))
        if m:
            found[f"{name} password"] = m.group(1).encode()
    return {k: v for k, v in found.items() if len(v) >= MIN_SECRET_LENGTH}


def _log_files() -> list[str]:
    paths = []
    for root, _dirs, files in os.walk(LOG_ROOT):
        if root.startswith(os.path.join(LOG_ROOT, "journal")):
            continue  # binary journal files (no journald runs here)
        paths += [os.path.join(root, f) for f in files]
    return [p for p in paths if os.path.isfile(p) and not os.path.islink(p)]


def _run_records() -> list[str]:
    """Files of the run records written since the session began."""
    paths = []
    for top in RUN_RECORDS:
        for root, _dirs, files in os.walk(top):
            paths += [os.path.join(root, f) for f in files]
    return [p for p in paths if os.path.isfile(p) and os.path.getmtime(p) >= SESSION_STARTED]


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError:
        return b""
    if path.endswith(".gz"):
        try:
            return gzip.decompress(data)
        except (OSError, EOFError):
            return data
    return data


def _since_session(data: bytes) -> bytes:
    """The lines of a log not stamped before the session began (unstamped lines are kept)."""
    kept = []
    for line in data.splitlines():
        m = STAMP.match(line)
        if m:
            stamp = time.strptime(
                f"{m.group(1).decode()} {m.group(2).decode()}", "%Y-%m-%d %H:%M:%S"
            )
            if calendar.timegm(stamp) < int(SESSION_STARTED):
                continue
        kept.append(line)
    return b"\n".join(kept)


def test_no_secret_in_any_host_log_or_run_record(stack):
    runs = [
        playbook("smoke_test.yml"),
        playbook("health_check.yml"),
        playbook("collect_diagnostics.yml"),
    ]
    secrets = _secrets(service_env())
    assert "var/secrets/smoke_api_key" in secrets and "DATABASE_URL password" in secrets, sorted(
        secrets
    )
    records = {f"output of run {i}": r.out.encode() for i, r in enumerate(runs)}
    records.update({path: _since_session(_read(path)) for path in _log_files()})
    records.update({path: _read(path) for path in _run_records()})
    assert any("runbook-records" in p for p in records), sorted(records)
    assert any(p.endswith("syslog") or p.endswith("user.log") for p in records), sorted(records)

    leaks = []
    for where, data in records.items():
        for name, value in secrets.items():
            if value in data:
                leaks.append(f"{name} in {where}")
        for m in RAW_KEY.finditer(data):
            leaks.append(f"a raw API key ({m.group()[:12].decode()}...) in {where}")
    print(f"searched {len(records)} logs and run records for {len(secrets)} secrets")
    assert not leaks, "\n".join(sorted(set(leaks)))
