"""The service-facing modules: what they hand the CLI, and the few views they build. What
changes and the health verdict are the CLI's: tests/integration/test_modules_follow_the_cli.py
runs each module beside the CLI on the same state."""

from ansible_collections.ffmpeg_api.ops.plugins.modules import (
    api_key,
    maintenance_mode,
    rate_limit,
    service_health,
    stuck_jobs,
)

# --- maintenance_mode -------------------------------------------------------------------


DURATIONS = ["90", "30m", "2h", "1.5d", " 45 s ", "0.5h", "soon", "", "1.5.2h", "-1m", "2w", "1e3"]


def test_maintenance_durations_use_the_cli_syntax():
    """The playbooks' filter, the maintenance module (which hands `ttl` to the CLI) and the
    CLI's options answer every input alike, because they all call the service's parser."""
    import click
    from ansible_collections.ffmpeg_api.ops.plugins.filter.durations import duration_seconds
    from click.testing import CliRunner

    from ffmpeg_api import cli

    for text in DURATIONS:
        try:
            expected = cli.DURATION_TYPE.convert(text, None, None)
        except click.BadParameter:
            expected = None
        assert duration_seconds(text) == expected, text
        # the real command line: refused inputs exit 2 (before Redis is touched) with the
        # parser's message; accepted ones get past option parsing
        run = CliRunner().invoke(cli.main, ["maintenance", "on", "--ttl", text, "--dry-run"])
        if expected is None:
            assert run.exit_code == 2 and "is not a duration" in run.output, (text, run.output)
        else:
            assert "is not a duration" not in run.output, (text, run.output)
    assert duration_seconds("1.5d") == 129600


def test_no_duration_regex_outside_the_parser():
    """The files that take a service duration hold no pattern of their own. (The other
    runbook playbooks' input checks move to argument specs in issue 16 item 5.)"""
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[2]
    ops = "collections/ansible_collections/ffmpeg_api/ops/plugins"
    files = [
        "playbooks/stuck_jobs.yml",
        "playbooks/sev1_outage.yml",
        "app/ffmpeg_api/cli.py",
        f"{ops}/modules/maintenance_mode.py",
        f"{ops}/modules/stuck_jobs.py",
        f"{ops}/filter/durations.py",
    ]
    copies = [f for f in files if re.search(r"\[smhd\]|\bsmhd\b", (root / f).read_text())]
    assert copies == []


def test_maintenance_passes_every_wish_to_the_cli():
    assert maintenance_mode.cli_args("off") == ("maintenance", "off")
    args = [a for a in maintenance_mode.cli_args("on", "resize", "1h") if a is not None]
    assert args == ["maintenance", "on", "--reason", "resize", "--ttl", "1h", "--keep-ttl"]
    args = [a for a in maintenance_mode.cli_args("on", None, None, True) if a is not None]
    assert args == ["maintenance", "on", "--extend-ttl"]


# --- rate_limit -------------------------------------------------------------------------


def test_rate_limit_is_one_cli_call():
    assert [a for a in rate_limit.cli_args(0, False) if a is not None] == [
        "ratelimit",
        "set",
        0,
        "--ddos",
        "off",
    ]
    assert [a for a in rate_limit.cli_args(None, True) if a is not None] == [
        "ratelimit",
        "set",
        "--ddos",
        "on",
    ]


# --- stuck_jobs -------------------------------------------------------------------------


def test_stuck_jobs_result_and_diff():
    out = stuck_jobs.build_result(
        {"changed": True, "requeued": ["b", "a"], "failed": ["c"]},
        {"changed": True, "requeued": ["q"]},
    )
    assert out["changed"] and out["stuck"] == ["b", "a", "c"]
    assert out["diff"]["before"] == {"stuck_jobs": ["a", "b", "c"], "unqueued_jobs": ["q"]}
    assert out["diff"]["after"] == {"stuck_jobs": [], "unqueued_jobs": []}


def test_stuck_jobs_report_only_is_not_a_change():
    out = stuck_jobs.build_result(
        {"changed": True, "requeued": ["a"], "failed": []}, report_only=True
    )
    assert out["changed"] is False and out["stuck"] == ["a"] and "diff" not in out
    assert (
        stuck_jobs.build_result({"changed": False, "requeued": [], "failed": []})["changed"]
        is False
    )


# --- api_key ----------------------------------------------------------------------------


def test_api_key_views_and_secret_file_lines():
    assert api_key.key_view({"active": True, "monitored": None, "id": "x"}) == {
        "active": True,
        "monitored": False,
    }
    lines = api_key.new_keys_lines([{"id": "abc", "name": "laptop", "key": "fk_abc_s"}])
    assert lines == "abc laptop fk_abc_s\n"


# --- service_health ---------------------------------------------------------------------


def test_health_passes_ignore_and_http_to_the_cli():
    args = service_health.cli_args(True, ["maintenance", "workers"], "http://x/h", 5, 2.0, 900)
    assert [a for a in args if a is not None] == [
        "health",
        "--deep",
        "--ignore",
        "maintenance",
        "--ignore",
        "workers",
        "--url",
        "http://x/h",
        "--samples",
        5,
        "--timeout",
        2.0,
        "--max-response-ms",
        900,
    ]
    assert [a for a in service_health.cli_args() if a is not None] == ["health"]
