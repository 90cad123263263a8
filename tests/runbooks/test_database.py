"""Database runbooks against the deployed PostgreSQL: backup, complete recovery, point-in-time
recovery and performance.

Each test works on a scratch table of its own in the service's database (the fault and the
proof), and on backup directories of its own, removed afterwards. The restores replace the
whole database (or cluster): the stack lock held around this file keeps other tests out.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import time

import pytest
from runbook_helpers import (
    assert_check_mode_changes_nothing,
    assert_second_run_changes_nothing,
    http,
    playbook,
    sql,
    wait_for,
)

DATA_DIR = "/var/lib/postgresql/15/main"
WAL_ARCHIVE = "/var/lib/postgresql/wal-archive"


def superuser_sql(query: str, database: str = "ffmpeg_api") -> str:
    """One statement as the postgres superuser over the local socket; psql's unaligned output."""
    proc = subprocess.run(
        [
            "runuser",
            "-u",
            "postgres",
            "--",
            "psql",
            "-XAtq",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            database,
            "-c",
            query,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd="/",
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def listing(path: str) -> list[str]:
    """Every file under path with its size and mtime (check mode must not touch any)."""
    found = []
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            found.append(f"{os.path.join(dirpath, name)}:{st.st_size}:{st.st_mtime_ns}")
    return sorted(found)


def marker_rows(table: str) -> list[str]:
    return [r[0] for r in sql(f"SELECT label FROM {table} ORDER BY id")]


def app_programs() -> str:
    return subprocess.run(
        ["supervisorctl", "status"], capture_output=True, text=True, check=False
    ).stdout


def assert_app_healthy_and_processing():
    """The API answers healthy through HAProxy, and a real conversion job completes."""
    wait_for("GET /health to answer 200", lambda: http("GET", "/health")[0] == 200, timeout=90)
    smoke = playbook("smoke_test.yml")
    assert smoke.recap, smoke.out[-3000:]


@pytest.fixture
def scratch_table(stack):
    name = f"runbook_db_marker_{os.getpid()}"
    sql(f"DROP TABLE IF EXISTS {name}")
    sql(f"CREATE TABLE {name} (id serial PRIMARY KEY, label text NOT NULL)")
    yield name
    sql(f"DROP TABLE IF EXISTS {name}")


def test_backup_then_restore_a_chosen_backup(scratch_table):
    backup_dir = f"/var/backups/ffmpeg-api-test-db-{os.getpid()}"
    safety_dir = os.path.join(backup_dir, "safety")
    backup_vars = {"database_backup_dir": backup_dir, "database_backup_min_interval": 0}
    try:
        sql(f"INSERT INTO {scratch_table} (label) VALUES ('in-first-backup')")

        # Check mode of the backup writes nothing.
        assert_check_mode_changes_nothing(
            "database_backup.yml", lambda: listing(backup_dir), extra_vars=backup_vars
        )
        assert not os.path.exists(os.path.join(backup_dir, "safety"))
        first = playbook("database_backup.yml", extra_vars=backup_vars)
        assert first.changed >= 1, first.out[-3000:]
        sql(f"INSERT INTO {scratch_table} (label) VALUES ('in-second-backup')")
        playbook("database_backup.yml", extra_vars=backup_vars)

        dumps = sorted(f for f in os.listdir(backup_dir) if f.endswith(".dump"))
        assert len(dumps) == 2, os.listdir(backup_dir)
        for dump in dumps:
            assert os.path.exists(os.path.join(backup_dir, dump + ".sha256"))
        check = subprocess.run(
            "cat *.sha256 | sha256sum -c -",
            shell=True,
            cwd=backup_dir,
            capture_output=True,
            text=True,
            check=False,
        )
        assert check.returncode == 0, check.stdout + check.stderr
        chosen = dumps[0][len("ffmpeg_api_") : -len(".dump")]

        # Run twice with the default interval: the recent backup is enough, nothing changes.
        assert_second_run_changes_nothing(
            "database_backup.yml", extra_vars={"database_backup_dir": backup_dir}
        )

        # The fault: bad writes after the backups.
        sql(f"DELETE FROM {scratch_table}")
        sql(f"INSERT INTO {scratch_table} (label) VALUES ('bad-write')")

        restore_vars = {"database_backup_dir": backup_dir, "database_restore_timestamp": chosen}
        preview = assert_check_mode_changes_nothing(
            "database_recovery.yml",
            lambda: (marker_rows(scratch_table), listing(backup_dir)),
            extra_vars=restore_vars,
        )
        assert preview.changed >= 1, preview.out[-3000:]
        assert re.search(r"^ffmpeg-api\s+RUNNING", app_programs(), re.M), app_programs()

        restore = playbook("database_recovery.yml", extra_vars=restore_vars)
        # The api and workers were stopped around the restore, and are running again.
        assert any("API program stopped" in t for t in restore.changed_tasks()), restore.out[-3000:]
        assert any("API program started" in t for t in restore.changed_tasks()), restore.out[-3000:]
        # The chosen (older) backup's rows, not the latest's, and not the bad write.
        assert marker_rows(scratch_table) == ["in-first-backup"]
        safety = [f for f in os.listdir(safety_dir) if f.endswith(".dump")]
        assert len(safety) == 1, safety
        safety_rows = subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                "pg_restore",
                "--data-only",
                "--table",
                scratch_table,
                "-f",
                "-",
                os.path.join(safety_dir, safety[0]),
            ],
            capture_output=True,
            text=True,
            check=True,
            cwd="/",
        ).stdout
        assert "bad-write" in safety_rows

        assert_second_run_changes_nothing("database_recovery.yml", extra_vars=restore_vars)
        assert_app_healthy_and_processing()

        # "Latest" is the other backup: restoring it is a change again, and brings both rows.
        playbook("database_recovery.yml", extra_vars={"database_backup_dir": backup_dir})
        assert marker_rows(scratch_table) == ["in-first-backup", "in-second-backup"]
        assert len([f for f in os.listdir(safety_dir) if f.endswith(".dump")]) == 2
        assert_app_healthy_and_processing()
    finally:
        shutil.rmtree(backup_dir, ignore_errors=True)


def test_point_in_time_recovery_to_between_two_inserts(scratch_table):
    assert superuser_sql("SHOW archive_mode") == "on", "deploy with postgresql_wal_archiving"
    base_dir = f"/var/lib/postgresql/pitr-test-{os.getpid()}"
    prepare_vars = {"pitr_base_dir": base_dir}
    safety_before = set(glob.glob(DATA_DIR + ".pre-pitr-*"))
    state_file = os.path.join(base_dir, "last_restore.json")
    try:
        sql(f"INSERT INTO {scratch_table} (label) VALUES ('before-base-backup')")
        assert_check_mode_changes_nothing(
            "point_in_time_recovery.yml", lambda: listing(base_dir), extra_vars=prepare_vars
        )
        assert not os.path.exists(base_dir)
        prepared = playbook("point_in_time_recovery.yml", extra_vars=prepare_vars)
        assert prepared.changed >= 1
        metas = glob.glob(os.path.join(base_dir, "base_*.json"))
        assert len(metas) == 1
        # The archive keeps no WAL older than the base backup (pitr_wal_cleanup).
        with open(metas[0], encoding="utf-8") as fh:
            start = re.search(r"file ([0-9A-F]{24})", json.load(fh)["start_wal"]).group(1)
        segments = [f for f in os.listdir(WAL_ARCHIVE) if re.fullmatch(r"[0-9A-F]{24}", f)]
        assert segments and min(f[8:] for f in segments) == start[8:], sorted(segments)
        assert_second_run_changes_nothing("point_in_time_recovery.yml", extra_vars=prepare_vars)

        sql(f"INSERT INTO {scratch_table} (label) VALUES ('first-insert')")
        time.sleep(1.0)
        target = sql(
            "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', "
            "'YYYY-MM-DD HH24:MI:SS.US') || '+00'"
        )[0][0]
        time.sleep(1.0)
        sql(f"INSERT INTO {scratch_table} (label) VALUES ('second-insert')")
        assert marker_rows(scratch_table) == ["before-base-backup", "first-insert", "second-insert"]

        restore_vars = {**prepare_vars, "pitr_action": "restore", "pitr_target_time": target}
        timeline = superuser_sql("SELECT timeline_id FROM pg_control_checkpoint()")
        preview = assert_check_mode_changes_nothing(
            "point_in_time_recovery.yml",
            lambda: (
                marker_rows(scratch_table),
                listing(base_dir),
                sorted(glob.glob(DATA_DIR + ".pre-pitr-*")),
                superuser_sql("SELECT timeline_id FROM pg_control_checkpoint()"),
            ),
            extra_vars=restore_vars,
        )
        assert preview.changed >= 1

        recovery = playbook("point_in_time_recovery.yml", extra_vars=restore_vars)
        stopped = [t for t in recovery.changed_tasks() if "API program stopped" in t]
        assert stopped, recovery.out[-3000:]
        # PostgreSQL's own word on where it stopped (the YAML callback may wrap the line).
        assert "recovery stopping before commit" in " ".join(recovery.out.split())
        assert marker_rows(scratch_table) == ["before-base-backup", "first-insert"]
        with open(state_file, encoding="utf-8") as fh:
            record = json.load(fh)
        assert os.path.isdir(record["safety_copy"])
        assert record["safety_copy"] not in safety_before
        assert record["timeline"] > int(timeline)
        assert superuser_sql("SELECT pg_is_in_recovery()") == "f"
        # No recovery setting left behind that would make the next deploy restart PostgreSQL.
        assert superuser_sql("SELECT count(*) FROM pg_settings WHERE pending_restart") == "0"

        assert_second_run_changes_nothing("point_in_time_recovery.yml", extra_vars=restore_vars)
        assert_app_healthy_and_processing()
    finally:
        for path in set(glob.glob(DATA_DIR + ".pre-pitr-*")) - safety_before:
            shutil.rmtree(path, ignore_errors=True)
        shutil.rmtree(base_dir, ignore_errors=True)


def test_database_performance_threshold_analyze_and_report(stack):
    table = f"runbook_db_perf_{os.getpid()}"
    original = superuser_sql(
        "SELECT setting FROM pg_settings WHERE name = 'log_min_duration_statement'"
    )
    wanted = 250 if original != "250" else 300
    try:
        sql(f"DROP TABLE IF EXISTS {table}")
        sql(f"CREATE TABLE {table} (id int) WITH (autovacuum_enabled = false)")
        sql(f"INSERT INTO {table} SELECT generate_series(1, 500)")
        sql("SELECT pg_sleep(0.3)")  # a slow statement pg_stat_statements records

        def state():
            return (
                superuser_sql(
                    "SELECT setting FROM pg_settings WHERE name = 'log_min_duration_statement'"
                ),
                superuser_sql(
                    f"SELECT coalesce(last_analyze::text, 'never') FROM pg_stat_user_tables "
                    f"WHERE relname = '{table}'"
                ),
            )

        assert state()[1] == "never"
        # The report lists the top statements and tables: enough of them that this test's own
        # appear whatever else the earlier tests left behind (with the default 10, the small
        # scratch table could rank after the service's own tables, and pg_sleep after slower
        # statements of a loaded machine).
        perf_vars = {
            "database_slow_query_threshold_ms": wanted,
            "database_analyze": True,
            "database_top": 100,
        }
        assert_check_mode_changes_nothing("database_performance.yml", state, extra_vars=perf_vars)
        run = playbook("database_performance.yml", extra_vars=perf_vars)
        assert run.changed >= 1
        wait_for("the new threshold", lambda: state()[0] == str(wanted), timeout=10)
        assert state()[1] != "never"
        assert "pg_sleep" in run.out  # the slow statement is reported
        assert table in run.out  # among the table sizes
        # A second run does nothing the first did. The live service keeps writing its own tables
        # meanwhile (workers, keys, uploads), and ANALYZE of a table written since the first
        # run is a change the module rightly reports: only that may remain, never this test's
        # table again nor any other task.
        second = playbook("database_performance.yml", extra_vars=perf_vars)
        again = re.search(r"analyzed:(.*?)(?:\n\s*reindexed:)", second.out, re.S)
        assert again, second.out[-3000:]
        others = [t for t in second.changed_tasks() if "Diagnose and tune the database" not in t]
        assert not others, others
        assert table not in again.group(1), again.group(1)
        if second.changed:
            print(f"second run analyzed tables the service wrote meanwhile: {again.group(1)}")
    finally:
        superuser_sql("ALTER SYSTEM RESET log_min_duration_statement")
        superuser_sql("SELECT pg_reload_conf()")
        sql(f"DROP TABLE IF EXISTS {table}")
