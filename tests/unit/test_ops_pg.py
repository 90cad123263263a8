"""Pure logic of the database runbook modules: names, retention, checksums, PITR metadata."""

from __future__ import annotations

import datetime
import hashlib

import pytest
from ansible_collections.ffmpeg_api.ops.plugins.module_utils import pg_files

UTC = datetime.UTC


def at(text: str) -> datetime.datetime:
    return pg_files.parse_timestamp(text)


def test_timestamp_round_trip_is_utc():
    moment = datetime.datetime(
        2025, 1, 27, 13, 0, 5, tzinfo=datetime.timezone(datetime.timedelta(hours=1))
    )
    assert pg_files.format_timestamp(moment) == "20250127_120005"
    assert at("20250127_120005") == datetime.datetime(2025, 1, 27, 12, 0, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    "bad", ["2025-01-27", "20250127120000", "20250127_1200", "20251327_120000", None]
)
def test_malformed_timestamps_are_refused(bad):
    with pytest.raises(ValueError):
        pg_files.parse_timestamp(bad)


def test_backup_file_names():
    assert (
        pg_files.backup_filename("ffmpeg_api", "20250127_120000")
        == "ffmpeg_api_20250127_120000.dump"
    )
    assert (
        pg_files.parse_backup_filename("ffmpeg_api", "ffmpeg_api_20250127_120000.dump")
        == "20250127_120000"
    )
    for other in (
        "ffmpeg_api_20250127_120000.dump.sha256",
        "ffmpeg_api_20250127_120000.dump.partial",
        "other_20250127_120000.dump",
        "ffmpeg_api_latest.dump",
    ):
        assert pg_files.parse_backup_filename("ffmpeg_api", other) is None


STAMPS = [
    "20250101_000000",
    "20250110_000000",
    "20250120_000000",
    "20250125_000000",
    "20250127_000000",
]
NOW = datetime.datetime(2025, 1, 27, 12, 0, tzinfo=UTC)


def test_retention_by_count_removes_the_oldest():
    assert pg_files.select_expired(STAMPS, keep=3, now=NOW) == [
        "20250110_000000",
        "20250101_000000",
    ]


def test_retention_by_age():
    assert pg_files.select_expired(STAMPS, max_age_days=10, now=NOW) == [
        "20250110_000000",
        "20250101_000000",
    ]


def test_retention_combines_count_and_age():
    assert pg_files.select_expired(STAMPS, keep=4, max_age_days=20, now=NOW) == ["20250101_000000"]
    assert pg_files.select_expired(STAMPS, keep=2, max_age_days=20, now=NOW) == STAMPS[:3][::-1]


def test_retention_never_removes_the_newest_and_is_off_by_default():
    assert (
        pg_files.select_expired(
            STAMPS, keep=1, max_age_days=0, now=NOW + datetime.timedelta(days=99)
        )
        == STAMPS[:-1][::-1]
    )
    assert pg_files.select_expired(STAMPS, now=NOW) == []
    assert pg_files.select_expired(STAMPS, keep=0, now=NOW) == []


def test_min_interval_finds_a_recent_backup():
    assert pg_files.newest_within(STAMPS, 13 * 3600, now=NOW) == "20250127_000000"
    assert pg_files.newest_within(STAMPS, 11 * 3600, now=NOW) is None
    assert pg_files.newest_within(STAMPS, 0, now=NOW) is None
    assert pg_files.newest_within([], 3600, now=NOW) is None


def test_checksum_file_round_trip(tmp_path):
    dump = tmp_path / "ffmpeg_api_20250127_120000.dump"
    dump.write_bytes(b"PGDMP" + bytes(range(256)) * 5000)
    digest = pg_files.sha256_file(str(dump), chunk_size=4096)
    assert digest == hashlib.sha256(dump.read_bytes()).hexdigest()
    line = pg_files.checksum_line(digest, dump.name)
    assert line == f"{digest}  {dump.name}\n"  # sha256sum -c reads this
    assert pg_files.parse_checksum_text(line, dump.name) == digest
    assert pg_files.parse_checksum_text(line, "other.dump") is None
    assert pg_files.parse_checksum_text(f"{digest.upper()} *{dump.name}\n", dump.name) == digest
    assert pg_files.parse_checksum_text("not a digest  x.dump\n", "x.dump") is None
    assert pg_files.parse_checksum_text("", "x.dump") is None


def test_scan_backups_flags_damaged_and_unchecksummed_files(tmp_path):
    good = tmp_path / "db_20250127_120000.dump"
    good.write_bytes(b"good")
    (tmp_path / (good.name + ".sha256")).write_text(
        pg_files.checksum_line(hashlib.sha256(b"good").hexdigest(), good.name)
    )
    bad = tmp_path / "db_20250126_120000.dump"
    bad.write_bytes(b"tampered")
    (tmp_path / (bad.name + ".sha256")).write_text(
        pg_files.checksum_line(hashlib.sha256(b"original").hexdigest(), bad.name)
    )
    (tmp_path / "db_20250125_120000.dump").write_bytes(b"no checksum")
    (tmp_path / "db_20250128_120000.dump.partial").write_bytes(b"interrupted")
    found = pg_files.scan_backups(str(tmp_path), "db", verify=True)
    assert [(b["timestamp"], b["checksum_valid"]) for b in found] == [
        ("20250127_120000", True),
        ("20250126_120000", False),
        ("20250125_120000", False),
    ]
    assert found[2]["checksum"] is None
    assert "checksum_valid" not in pg_files.scan_backups(str(tmp_path), "db")[0]
    assert pg_files.scan_backups(str(tmp_path / "missing"), "db") == []


def test_restore_marker_round_trip():
    digest = "ab" * 32
    marker = pg_files.restore_marker("20250127_120000", digest)
    assert pg_files.parse_restore_marker(marker) == ("20250127_120000", digest)
    assert pg_files.parse_restore_marker("some other comment") is None
    assert pg_files.parse_restore_marker(None) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-01-27 11:59:00+00", datetime.datetime(2025, 1, 27, 11, 59, tzinfo=UTC)),
        ("2025-01-27T11:59:00Z", datetime.datetime(2025, 1, 27, 11, 59, tzinfo=UTC)),
        ("2025-01-27 11:59:00", datetime.datetime(2025, 1, 27, 11, 59, tzinfo=UTC)),
        (
            "2025-01-27 13:59:00.250+02:00",
            datetime.datetime(2025, 1, 27, 11, 59, 0, 250000, tzinfo=UTC),
        ),
    ],
)
def test_target_time_parsing(text, expected):
    assert pg_files.parse_target_time(text) == expected


def test_target_time_rejects_garbage_and_formats_for_postgres():
    with pytest.raises(ValueError):
        pg_files.parse_target_time("yesterday")
    moment = pg_files.parse_target_time("2025-01-27 13:59:00.25+02")
    assert pg_files.postgres_time(moment) == "2025-01-27 11:59:00.250000+00"


def test_base_backup_choice_needs_one_finished_before_the_target():
    bases = [
        {"name": "base_a", "end_time": "2025-01-27T10:00:05+00:00"},
        {"name": "base_b", "end_time": "2025-01-27T11:00:05+00:00"},
        {"name": "base_c", "end_time": "2025-01-27T12:00:05+00:00"},
    ]
    pick = pg_files.choose_base_backup
    assert pick(bases, pg_files.parse_target_time("2025-01-27 11:30:00"))["name"] == "base_b"
    assert pick(bases, pg_files.parse_target_time("2025-01-27 12:00:04"))["name"] == "base_b"
    assert pick(bases, pg_files.parse_target_time("2025-01-28 00:00:00"))["name"] == "base_c"
    assert pick(bases, pg_files.parse_target_time("2025-01-27 10:00:00")) is None


def test_backup_label_and_controldata_parsing():
    label = (
        "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n"
        "CHECKPOINT LOCATION: 0/2000060\n"
        "START TIME: 2025-01-27 12:00:00 UTC\n"
        "LABEL: pg_basebackup base backup\n"
    )
    fields = pg_files.parse_backup_label(label)
    assert fields["START TIME"] == "2025-01-27 12:00:00 UTC"
    assert fields["START WAL LOCATION"].startswith("0/2000028")
    control = (
        "Database system identifier:           7312345678901234567\n"
        "Latest checkpoint's TimeLineID:       3\n"
    )
    parsed = pg_files.parse_backup_label(control)
    assert parsed["Latest checkpoint's TimeLineID"] == "3"
    assert pg_files.start_walfile(fields["START WAL LOCATION"]) == "000000010000000000000002"
    assert pg_files.start_walfile(None) is None
    assert pg_files.timeline_of_walfile("00000003000000000000000A") == 3
    with pytest.raises(ValueError):
        pg_files.timeline_of_walfile("00000003.history")


def test_slow_queries_are_ranked_by_mean_time():
    rows = [
        {
            "query": "SELECT 1",
            "calls": 900,
            "mean_exec_time": 0.01,
            "max_exec_time": 0.5,
            "total_exec_time": 9.0,
            "rows": 900,
        },
        {
            "query": "SELECT *\n  FROM jobs\n WHERE status = $1",
            "calls": 12,
            "mean_exec_time": 1520.4567,
            "max_exec_time": 3000.0,
            "total_exec_time": 18245.48,
            "rows": 40,
        },
        {
            "query": "UPDATE jobs SET heartbeat_at = now()",
            "calls": "30",
            "mean_exec_time": "2.5",
            "max_exec_time": None,
            "total_exec_time": "75",
            "rows": "30",
        },
    ]
    top = pg_files.top_slow_queries(rows, 2)
    assert [q["mean_ms"] for q in top] == [1520.457, 2.5]
    assert top[0]["query"] == "SELECT * FROM jobs WHERE status = $1"
    assert top[1] == {
        "query": "UPDATE jobs SET heartbeat_at = now()",
        "calls": 30,
        "mean_ms": 2.5,
        "max_ms": 0.0,
        "total_ms": 75.0,
        "rows": 30,
    }
    assert pg_files.top_slow_queries([], 5) == []


def test_connection_counts_by_state():
    rows = [
        {"state": "active", "count": 2},
        {"state": "idle", "count": 7},
        {"state": None, "count": 1},
    ]
    assert pg_files.connection_counts(rows) == {"active": 2, "idle": 7, "background": 1}
