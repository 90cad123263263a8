"""Pure logic of the firewall, storage, volume and diagnostics modules."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import tarfile

import pytest
from ansible_collections.ffmpeg_api.ops.plugins.modules import (
    diagnostics,
    haproxy_top_clients,
    nft_blocklist,
    storage_archive,
    volume_grow,
)

net = ipaddress.ip_network

# --- nft_blocklist ------------------------------------------------------------------------


def test_normalize_merges_duplicates_and_covered_addresses():
    got = nft_blocklist.normalize(["10.0.0.0/24", "10.0.0.7", " 10.0.0.7 ", "192.0.2.1/32"])
    assert got == [net("10.0.0.0/24"), net("192.0.2.1/32")]


@pytest.mark.parametrize("bad", ["10.0.0.300", "example.com", "2001:db8::1", ""])
def test_normalize_refuses_what_the_set_cannot_hold(bad):
    with pytest.raises(ValueError):
        nft_blocklist.normalize([bad])


def test_parse_table_reads_every_element_form():
    document = {
        "nftables": [
            {"metainfo": {"json_schema_version": 1}},
            {"table": {"family": "inet", "name": "t"}},
            {
                "set": {
                    "name": "blocked_ipv4",
                    "elem": [
                        "192.0.2.1",
                        {"prefix": {"addr": "198.51.100.0", "len": 24}},
                        {"elem": {"val": "203.0.113.9", "timeout": 3600, "expires": 3599}},
                        {"range": ["10.0.0.0", "10.0.0.3"]},
                    ],
                }
            },
            {"set": {"name": "other", "elem": ["1.1.1.1"]}},
            {"rule": {"chain": "input", "comment": nft_blocklist.RULE_COMMENT}},
        ]
    }
    has_set, has_rule, current, expiry = nft_blocklist.parse_table(document, "blocked_ipv4")
    assert has_set and has_rule
    assert expiry == {net("203.0.113.9/32"): (3600, 3599)}
    assert current == sorted(
        [net("192.0.2.1/32"), net("198.51.100.0/24"), net("203.0.113.9/32"), net("10.0.0.0/30")]
    )


def test_parse_table_without_the_rule_or_set():
    assert nft_blocklist.parse_table({"nftables": []}, "s") == (False, False, [], {})


def test_plan_adds_only_what_is_not_covered_and_removes_exact_entries():
    current = [net("198.51.100.0/24"), net("192.0.2.1/32")]
    wanted = [net("198.51.100.7/32"), net("203.0.113.1/32"), net("192.0.2.1/32")]
    assert nft_blocklist.plan(current, wanted, "present") == ([net("203.0.113.1/32")], [])
    assert nft_blocklist.plan(current, wanted, "absent") == ([], [net("192.0.2.1/32")])
    assert nft_blocklist.plan(current, [], "present") == ([], [])


def test_build_script_is_one_transaction_with_timeouts():
    script = nft_blocklist.build_script(
        "t", "s", -10, True, [net("192.0.2.1/32"), net("10.0.0.0/8")], [net("1.2.3.4/32")], "1h"
    )
    lines = script.splitlines()
    assert lines[0] == "add table inet t"
    assert "flags interval, timeout" in lines[1]
    assert "hook input priority -10" in lines[2]
    assert sum("drop" in line for line in lines) == 1
    assert "add element inet t s { 192.0.2.1 timeout 1h, 10.0.0.0/8 timeout 1h }" in lines
    assert "delete element inet t s { 1.2.3.4 }" in lines


def test_build_script_without_create_only_touches_elements():
    script = nft_blocklist.build_script("t", "s", 0, False, [net("192.0.2.1/32")], [], None)
    assert script == "add element inet t s { 192.0.2.1 }\n"


def test_mass_removal_refills_the_set_keeping_expiries():
    current = [net(f"10.0.{i // 256}.{i % 256}/32") for i in range(300)]
    expiry = {current[-1]: (3600, 1200)}
    script = nft_blocklist.build_script(
        "t", "s", 0, False, [net("192.0.2.1/32")], current[:250], "1h", current, expiry
    )
    lines = script.splitlines()
    assert lines[0] == "flush set inet t s"
    assert len(lines) == 2 and lines[1].count(",") == 50
    assert "10.0.1.43 timeout 3600s expires 1200s" in lines[1]
    assert "192.0.2.1 timeout 1h" in lines[1]
    assert "10.0.0.0" not in lines[1]


def test_ten_thousand_addresses_are_one_element_statement():
    addrs = [str(ipaddress.ip_address("10.0.0.0") + 2 * i) for i in range(10_000)]
    wanted = nft_blocklist.normalize(addrs)
    to_add, _ = nft_blocklist.plan([], wanted, "present")
    script = nft_blocklist.build_script("t", "s", 0, False, to_add, [], None)
    assert script.count("add element") == 1 and len(to_add) == 10_000


# --- haproxy_top_clients ------------------------------------------------------------------

NOW = datetime.datetime(2026, 11, 29, 3, 30, 0)


def log_line(ip, status, when=NOW):
    stamp = when.strftime("%d/%b/%Y:%H:%M:%S") + ".123"
    return (
        f"2026-11-29T03:30:00+00:00 lb haproxy[7]: {ip}:51234 [{stamp}] ffmpeg_api_front "
        f'ffmpeg_api/api1 0/0/0/4/4 {status} 99 - - ---- 1/1/0/0/0 0/0 "GET /api/v1/jobs HTTP/1.1"'
    )


def test_count_clients_windows_and_statuses():
    old = NOW - datetime.timedelta(hours=2)
    lines = (
        [log_line("203.0.113.7", 429)] * 8
        + [log_line("203.0.113.7", 200)] * 2
        + [log_line("192.0.2.1", 403)]
        + [log_line("198.51.100.1", 200, when=old)] * 50
        + [log_line("192.0.2.1", 200).split("]: ", 1)[1]]  # no syslog prefix (stdout logging)
        + ["Nov 29 03:30:00 lb haproxy[7]: Proxy ffmpeg_api_front started.", "garbage"]
    )
    counts, skipped = haproxy_top_clients.count_clients(lines, NOW - datetime.timedelta(minutes=10))
    assert skipped == 2
    assert counts == {
        "203.0.113.7": {"requests": 10, "status_4xx": 8, "status_429": 8, "status_403": 0},
        "192.0.2.1": {"requests": 2, "status_4xx": 1, "status_429": 0, "status_403": 1},
    }


def test_rank_orders_and_applies_threshold_and_exclusions():
    counts = {
        "10.0.0.1": {"requests": 500, "status_4xx": 250, "status_429": 0, "status_403": 0},
        "127.0.0.1": {"requests": 900, "status_4xx": 0, "status_429": 0, "status_403": 0},
        "10.0.0.2": {"requests": 20, "status_4xx": 0, "status_429": 0, "status_403": 0},
    }
    top, over = haproxy_top_clients.rank(counts, 2, 100, [net("127.0.0.0/8")])
    assert [c["address"] for c in top] == ["127.0.0.1", "10.0.0.1"]
    assert [c["address"] for c in over] == ["10.0.0.1"]
    assert over[0]["share_4xx"] == 0.5
    assert haproxy_top_clients.rank(counts, 5, 0, [])[1] == []


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("10m", 600), ("2d", 172800)]
)
def test_parse_window(text, seconds):
    assert haproxy_top_clients.parse_window(text) == seconds


def test_parse_window_refuses_nonsense():
    with pytest.raises(ValueError):
        haproxy_top_clients.parse_window("soon")


# --- storage_archive ----------------------------------------------------------------------


def test_month_start_is_the_default_cutoff():
    now = datetime.datetime(2026, 11, 29, 3, 0, tzinfo=datetime.UTC)
    assert storage_archive.parse_cutoff(None, now).isoformat() == "2026-11-01T00:00:00+00:00"
    assert storage_archive.parse_cutoff("2026-10-15", now).day == 15


def test_candidates_skip_recent_files_links_and_other_extensions(tmp_path):
    out = tmp_path / "output"
    (out / "job1").mkdir(parents=True)
    (out / "job2").mkdir()
    old = datetime.datetime(2026, 9, 1).timestamp()
    for rel in ("job1/a.mp4", "job1/a.log", "job2/b.WEBM"):
        (out / rel).write_bytes(b"x" * 10)
        os.utime(out / rel, (old, old))
    (out / "job2" / "new.mp4").write_bytes(b"new")
    os.symlink(out / "job1" / "a.mp4", out / "job2" / "link.mp4")
    cutoff = datetime.datetime(2026, 11, 1, tzinfo=datetime.UTC)
    found, recent = storage_archive.candidates(str(out), cutoff, ["mp4", ".webm"])
    assert [rel for _, rel, _ in found] == ["job1/a.mp4", "job2/b.WEBM"]
    assert recent == 1
    found_all, _ = storage_archive.candidates(str(out), cutoff, [])
    assert "job1/a.log" in [rel for _, rel, _ in found_all]


def test_matches_needs_size_sha256_and_single_part_md5(tmp_path):
    data = b"payload" * 100
    path = tmp_path / "f"
    path.write_bytes(data)
    sha, md5 = storage_archive.digests(str(path))
    assert sha == hashlib.sha256(data).hexdigest() and md5 == hashlib.md5(data).hexdigest()
    head = {"ContentLength": len(data), "Metadata": {"sha256": sha}, "ETag": f'"{md5}"'}
    assert storage_archive.matches(head, len(data), sha, md5)
    assert not storage_archive.matches(None, len(data), sha, md5)
    assert not storage_archive.matches({**head, "ContentLength": 1}, len(data), sha, md5)
    assert not storage_archive.matches({**head, "Metadata": {}}, len(data), sha, md5)
    assert not storage_archive.matches({**head, "ETag": '"0000"'}, len(data), sha, md5)
    assert storage_archive.matches({**head, "ETag": '"abc-3"'}, len(data), sha, md5)


def test_read_env_value(tmp_path):
    env = tmp_path / "env"
    env.write_text("# c\nDATABASE_URL=postgresql://u:p@h/db\nSTORAGE_ROOT='/srv/storage'\n")
    assert storage_archive.read_env_value(str(env), "STORAGE_ROOT") == "/srv/storage"
    assert storage_archive.read_env_value(str(env), "MISSING") is None


# --- volume_grow --------------------------------------------------------------------------


def test_parse_dumpe2fs():
    text = (
        "Filesystem volume name:   <none>\n"
        "Block count:              102400\n"
        "Block size:               1024\n"
    )
    assert volume_grow.parse_dumpe2fs(text) == 102400 * 1024
    with pytest.raises(ValueError):
        volume_grow.parse_dumpe2fs("nothing")


def test_parse_xfs_info():
    text = (
        "meta-data=/dev/vdb1              isize=512    agcount=4, agsize=655360 blks\n"
        "data     =                       bsize=4096   blocks=2621440, imaxpct=25\n"
        "naming   =version 2              bsize=4096   ascii-ci=0, ftype=1\n"
    )
    assert volume_grow.parse_xfs_info(text) == 2621440 * 4096


def test_partition_of_a_whole_disk_is_none():
    assert volume_grow.partition_of("/dev/loop0") is None


# --- diagnostics --------------------------------------------------------------------------


def test_scrub_hides_passwords_and_secrets():
    text = (
        "DATABASE_URL=postgresql://ffmpeg_user:s3cr3tPass@127.0.0.1:5432/db\n"
        "REDIS_URL=redis://:r3dis@127.0.0.1:6379/0\n"
        "WEBHOOK_SECRET=abcdef\nPGPASSWORD: hunter2\nplain line stays\n"
    )
    out = diagnostics.scrub(text)
    for secret in ("s3cr3tPass", "r3dis", "abcdef", "hunter2"):
        assert secret not in out
    assert "postgresql://ffmpeg_user:***@127.0.0.1:5432/db" in out
    assert "plain line stays" in out


@pytest.mark.parametrize(
    ("text", "back"),
    [("2h", 7200), ("90m", 5400), ("1 hour ago", 3600), ("30 minutes ago", 1800), ("45", 45)],
)
def test_since_timestamp_durations(text, back):
    assert diagnostics.since_timestamp(text, 100_000.0) == 100_000.0 - back


def test_since_timestamp_iso_and_nonsense():
    assert (
        diagnostics.since_timestamp("2026-11-29T00:00:00Z", 0)
        == datetime.datetime(2026, 11, 29, tzinfo=datetime.UTC).timestamp()
    )
    with pytest.raises(ValueError):
        diagnostics.since_timestamp("yesterday-ish", 0)


def test_supervisor_status_and_memory():
    status = (
        "ffmpeg-api                       RUNNING   pid 1, uptime 0:01:00\n"
        "ffmpeg-api-worker:ffmpeg-api-worker-1   FATAL     Exited too quickly\n"
    )
    assert diagnostics.parse_supervisor_status(status) == {
        "ffmpeg-api": "RUNNING",
        "ffmpeg-api-worker:ffmpeg-api-worker-1": "FATAL",
    }
    assert diagnostics.mem_available_percent("MemTotal: 1000 kB\nMemAvailable: 250 kB\n") == 25.0


def test_write_bundle_and_recent_logs(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "new.log").write_text("new")
    (logs / "old.log").write_text("old")
    os.utime(logs / "old.log", (1000, 1000))
    assert diagnostics.recent_logs([str(logs), str(tmp_path / "missing")], 10_000) == [
        str(logs / "new.log")
    ]
    bundle = tmp_path / "diag-1.tar.gz"
    diagnostics.write_bundle(str(bundle), {"a.txt": "A", "logs/var/log/x.log": "X"})
    with tarfile.open(bundle) as tar:
        assert sorted(tar.getnames()) == ["diag-1/a.txt", "diag-1/logs/var/log/x.log"]
    assert oct(os.stat(bundle).st_mode & 0o777) == "0o600"
