# Copyright: FFmpeg API Ops team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure logic of the database runbooks: backup names, retention, checksums, PITR metadata.

Nothing here runs a command or touches PostgreSQL, so all of it is unit-tested directly.

A logical backup is `<database>_<YYYYmmdd_HHMMSS>.dump` (pg_dump custom format, UTC time) with
`<name>.sha256` beside it in `sha256sum` format. Base backups for point-in-time recovery are
directories `base_<YYYYmmdd_HHMMSS>` with `base_<...>.json` beside them, written only once the
copy is complete (a directory without it is an interrupted backup and is never used).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import hashlib
import os
import re

TIMESTAMP_FORMAT = "%Y%m%d_%H%M%S"
TIMESTAMP_RE = re.compile(r"^\d{8}_\d{6}$")
DUMP_SUFFIX = ".dump"
CHECKSUM_SUFFIX = ".sha256"
BASE_PREFIX = "base_"
UTC = datetime.timezone.utc


def utcnow():
    return datetime.datetime.now(UTC)


def format_timestamp(moment):
    """`YYYYmmdd_HHMMSS` of an aware datetime, in UTC."""
    return moment.astimezone(UTC).strftime(TIMESTAMP_FORMAT)


def parse_timestamp(text):
    """The aware UTC datetime of a `YYYYmmdd_HHMMSS` string; ValueError when malformed."""
    if not isinstance(text, str) or not TIMESTAMP_RE.match(text):
        raise ValueError("timestamp %r is not YYYYmmdd_HHMMSS" % (text,))
    return datetime.datetime.strptime(text, TIMESTAMP_FORMAT).replace(tzinfo=UTC)


def backup_filename(database, timestamp):
    return "%s_%s%s" % (database, timestamp, DUMP_SUFFIX)


def parse_backup_filename(database, filename):
    """The timestamp of `<database>_<ts>.dump`, or None for any other file."""
    prefix = database + "_"
    if not (filename.startswith(prefix) and filename.endswith(DUMP_SUFFIX)):
        return None
    stamp = filename[len(prefix) : -len(DUMP_SUFFIX)]
    try:
        parse_timestamp(stamp)
    except ValueError:
        return None
    return stamp


def sort_newest_first(items, key="timestamp"):
    return sorted(items, key=lambda item: item[key], reverse=True)


def select_expired(timestamps, keep=None, max_age_days=None, now=None):
    """Which backups retention removes, given their timestamps.

    A backup goes when it is beyond the `keep` newest, or older than `max_age_days` days. The
    newest backup always stays, whatever the settings: retention never leaves zero backups.
    None (or 0 for keep) disables that rule. Returns the expired timestamps, newest first.
    """
    now = now or utcnow()
    ordered = sorted(set(timestamps), reverse=True)
    expired = []
    for index, stamp in enumerate(ordered):
        if index == 0:
            continue
        too_many = bool(keep) and index >= keep
        too_old = max_age_days is not None and now - parse_timestamp(stamp) > datetime.timedelta(
            days=max_age_days
        )
        if too_many or too_old:
            expired.append(stamp)
    return expired


def newest_within(timestamps, seconds, now=None):
    """The newest timestamp younger than `seconds`, or None (None also when seconds is 0)."""
    if not seconds:
        return None
    now = now or utcnow()
    recent = [
        s for s in timestamps if now - parse_timestamp(s) < datetime.timedelta(seconds=seconds)
    ]
    return max(recent) if recent else None


def sha256_file(path, chunk_size=1024 * 1024):
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(chunk_size)
            if not chunk:
                break
            digest.update(chunk)
    return digest.hexdigest()


def checksum_line(digest, filename):
    """One line in `sha256sum` format, so `sha256sum -c` verifies the file by hand too."""
    return "%s  %s\n" % (digest, filename)


def parse_checksum_text(text, filename=None):
    """The hex digest from `sha256sum` output (for filename, when given); None if absent."""
    for line in (text or "").splitlines():
        parts = line.strip().split(None, 1)
        if len(parts) != 2 and not (len(parts) == 1 and filename is None):
            continue
        digest = parts[0].lower()
        if not re.match(r"^[0-9a-f]{64}$", digest):
            continue
        if filename is None or len(parts) == 1 or parts[1].lstrip("*") == filename:
            return digest
    return None


def restore_marker(timestamp, digest):
    """The comment a restore leaves on the database: which backup (by checksum) it holds."""
    return "ffmpeg_api.ops restored backup %s sha256=%s" % (timestamp, digest)


def parse_restore_marker(comment):
    """(timestamp, digest) from a database comment written by restore_marker(), else None."""
    match = re.search(r"restored backup (\d{8}_\d{6}) sha256=([0-9a-f]{64})", comment or "")
    return (match.group(1), match.group(2)) if match else None


def parse_target_time(text):
    """An aware datetime from ISO 8601 text; a time without an offset is taken as UTC."""
    if isinstance(text, datetime.datetime):
        moment = text
    else:
        value = str(text).strip().replace("T", " ")
        if value.endswith("Z"):
            value = value[:-1] + "+00:00"
        # PostgreSQL prints offsets as +00 ; Python wants +00:00
        value = re.sub(r"([+-]\d{2})$", r"\1:00", value)
        try:
            moment = datetime.datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(
                "target time %r is not an ISO 8601 time (e.g. 2026-01-27 12:00:00+00)" % (text,)
            )
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment


def postgres_time(moment):
    """A time PostgreSQL parses unambiguously (UTC, microseconds kept)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")


def choose_base_backup(bases, target):
    """The newest complete base backup that finished before `target` (dicts with 'end_time').

    A base backup is consistent only from its end on: recovery to an earlier time fails.
    """
    usable = [b for b in bases if parse_target_time(b["end_time"]) < target]
    return sort_newest_first(usable, key="end_time")[0] if usable else None


def parse_backup_label(text):
    """Fields of a base backup's `backup_label` (START WAL LOCATION, START TIME, ...)."""
    fields = {}
    for line in (text or "").splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def start_walfile(start_wal_location):
    """The WAL file of a backup_label START WAL LOCATION ("0/5000028 (file 0000...05)"), or None."""
    match = re.search(r"file ([0-9A-Fa-f]{24})", start_wal_location or "")
    return match.group(1) if match else None


def timeline_of_walfile(name):
    """The timeline (int) of a WAL file name such as 000000020000000000000003."""
    if not re.match(r"^[0-9A-Fa-f]{24}$", name or ""):
        raise ValueError("not a WAL file name: %r" % (name,))
    return int(name[:8], 16)


def top_slow_queries(rows, limit):
    """pg_stat_statements rows (dicts) as a readable top list by mean time, longest first."""
    shaped = []
    for row in rows:
        mean = float(row.get("mean_exec_time") or 0.0)
        shaped.append(
            dict(
                query=" ".join(str(row.get("query") or "").split()),
                calls=int(row.get("calls") or 0),
                mean_ms=round(mean, 3),
                max_ms=round(float(row.get("max_exec_time") or 0.0), 3),
                total_ms=round(float(row.get("total_exec_time") or 0.0), 3),
                rows=int(row.get("rows") or 0),
            )
        )
    shaped.sort(key=lambda q: (q["mean_ms"], q["calls"]), reverse=True)
    return shaped[:limit]


def connection_counts(rows):
    """{state: count} from pg_stat_activity rows; a backend without a state is 'background'."""
    counts = {}
    for row in rows:
        state = row.get("state") or "background"
        counts[state] = counts.get(state, 0) + int(row.get("count", 1))
    return counts


def scan_backups(directory, database, verify=False):
    """The backups of database in directory, newest first.

    Each: timestamp, path, size, checksum (and checksum_valid when verify).
    """
    found = []
    if not os.path.isdir(directory):
        return found
    for name in os.listdir(directory):
        stamp = parse_backup_filename(database, name)
        if stamp is None:
            continue
        path = os.path.join(directory, name)
        checksum = None
        try:
            with open(path + CHECKSUM_SUFFIX) as fh:
                checksum = parse_checksum_text(fh.read(), name)
        except (IOError, OSError):
            pass
        entry = dict(timestamp=stamp, path=path, size=os.path.getsize(path), checksum=checksum)
        if verify:
            entry["checksum_valid"] = checksum is not None and sha256_file(path) == checksum
        found.append(entry)
    return sort_newest_first(found)
