"""Decision logic of the service-facing modules: what changes, and the health verdict."""

from ansible_collections.ffmpeg_api.ops.plugins.modules import (
    api_key,
    maintenance_mode,
    rate_limit,
    service_health,
    stuck_jobs,
)

OFF = {"enabled": False, "reason": None, "since": None, "ttl": None}


def on(reason="resize", ttl=None):
    return {"enabled": True, "reason": reason, "since": 1.0, "ttl": ttl}


# --- maintenance_mode -------------------------------------------------------------------


def test_maintenance_durations_use_the_cli_syntax():
    assert maintenance_mode.duration_seconds("90") == 90
    assert maintenance_mode.duration_seconds("30m") == 1800
    assert maintenance_mode.duration_seconds("2h") == 7200
    assert maintenance_mode.duration_seconds("1.5d") == 129600
    assert maintenance_mode.duration_seconds("soon") is None


def test_maintenance_on_from_off_is_a_change_with_the_ttl():
    changed, wanted = maintenance_mode.plan(OFF, "on", "resize", 3600)
    assert changed and wanted["enabled"] and wanted["reason"] == "resize" and wanted["ttl"] == 3600


def test_maintenance_already_on_with_same_reason_and_expiry_is_not_a_change():
    # The remaining TTL is not compared (it counts down): a rerun must not extend it.
    changed, wanted = maintenance_mode.plan(on("resize", ttl=1200), "on", "resize", 3600)
    assert not changed and wanted["ttl"] == 1200


def test_maintenance_reason_change_or_missing_expiry_is_a_change():
    assert maintenance_mode.plan(on("resize", 1200), "on", "restore", 3600)[0]
    # On without expiry but an expiry is wanted: set it.
    assert maintenance_mode.plan(on("resize", None), "on", "resize", 3600)[0]
    # No reason given: the current one is kept, nothing to do.
    assert not maintenance_mode.plan(on("resize", None), "on", None, None)[0]
    assert maintenance_mode.plan(on("resize", 1200), "on", "resize", 3600, extend_ttl=True)[0]


def test_maintenance_off():
    assert maintenance_mode.plan(on(), "off") == (True, OFF)
    assert maintenance_mode.plan(OFF, "off") == (False, OFF)


# --- rate_limit -------------------------------------------------------------------------

LIMITS = {
    "global_per_minute": 0,
    "per_key_default_per_minute": 600,
    "ddos_protection": False,
    "ddos_ip_per_minute": 60,
}


def test_rate_limit_plans_only_what_differs():
    assert rate_limit.plan(LIMITS, per_minute=0, ddos=False)[:2] == (None, None)
    set_limit, set_ddos, wanted = rate_limit.plan(LIMITS, per_minute=100, ddos=True)
    assert (set_limit, set_ddos) == (100, True)
    assert wanted["global_per_minute"] == 100 and wanted["ddos_protection"] is True
    # Unset options are left alone.
    assert rate_limit.plan(LIMITS, per_minute=None, ddos=True)[:2] == (None, True)
    assert rate_limit.plan(dict(LIMITS, ddos_protection=True), ddos=False)[:2] == (None, False)


# --- stuck_jobs -------------------------------------------------------------------------


def test_stuck_jobs_result_and_diff():
    out = stuck_jobs.build_result({"requeued": ["b", "a"], "failed": ["c"]}, {"requeued": ["q"]})
    assert out["changed"] and out["stuck"] == ["b", "a", "c"]
    assert out["diff"]["before"] == {"stuck_jobs": ["a", "b", "c"], "unqueued_jobs": ["q"]}
    assert out["diff"]["after"] == {"stuck_jobs": [], "unqueued_jobs": []}


def test_stuck_jobs_report_only_is_not_a_change():
    out = stuck_jobs.build_result({"requeued": ["a"], "failed": []}, report_only=True)
    assert out["changed"] is False and out["stuck"] == ["a"] and "diff" not in out
    assert stuck_jobs.build_result({"requeued": [], "failed": []})["changed"] is False


# --- api_key ----------------------------------------------------------------------------


def test_api_key_views_and_secret_file_lines():
    assert api_key.key_view({"active": True, "monitored": None, "id": "x"}) == {
        "active": True,
        "monitored": False,
    }
    lines = api_key.new_keys_lines([{"id": "abc", "name": "laptop", "key": "fk_abc_s"}])
    assert lines == "abc laptop fk_abc_s\n"


# --- service_health ---------------------------------------------------------------------


def report(status="healthy", cpu_alive=2, problems=(), **components):
    comps = {
        "database": {"status": "ok"},
        "redis": {"status": "ok"},
        "storage": {"status": "ok"},
        "ffmpeg": {"status": "ok"},
        "workers": {"status": "ok", "cpu": {"alive": cpu_alive}, "gpu": {"alive": 0}},
        "maintenance": {"status": "ok"},
    }
    comps.update(components)
    return {"status": status, "components": comps, "problems": list(problems)}


def test_health_verdict_healthy():
    assert service_health.verdict(report()) == (True, "healthy", [], "healthy")


def test_health_verdict_names_every_problem_in_one_line():
    r = report(
        status="unhealthy",
        cpu_alive=0,
        problems=[
            {"component": "database", "message": "database error (connection refused)"},
            {"component": "workers", "message": "workers: 0 alive"},
        ],
        database={"status": "error", "error": "connection refused"},
    )
    healthy, status, _problems, summary = service_health.verdict(r)
    assert not healthy and status == "unhealthy"
    assert summary == "unhealthy: database error (connection refused); workers: 0 alive"


def test_health_no_workers_is_unhealthy_unless_allowed():
    r = report(cpu_alive=0, problems=[{"component": "workers", "message": "workers: 0 alive"}])
    assert service_health.verdict(r)[0] is False
    assert service_health.verdict(r, require_workers=False)[:2] == (True, "degraded")
    assert service_health.verdict(r, ignore=["workers"]) == (True, "healthy", [], "healthy")


def test_health_maintenance_degrades_and_can_be_ignored():
    r = report(
        status="degraded",
        problems=[{"component": "maintenance", "message": "maintenance mode on (resize)"}],
        maintenance={"status": "warning", "enabled": True, "reason": "resize"},
    )
    assert service_health.verdict(r) == (
        True,
        "degraded",
        ["maintenance mode on (resize)"],
        "degraded: maintenance mode on (resize)",
    )
    assert service_health.verdict(r, ignore=["maintenance"])[1] == "healthy"


def test_health_http_failures_and_slowness():
    ok = {"status": 200, "avg_ms": 20.0, "error": None}
    assert service_health.verdict(report(), ok)[0] is True
    slow = dict(ok, avg_ms=2500.0)
    healthy, _, problems, _ = service_health.verdict(report(), slow, max_response_ms=1000)
    assert not healthy and problems == ["slow responses: 2500 ms average (limit 1000 ms)"]
    refused = {"status": None, "avg_ms": None, "error": "URLError (refused)"}
    assert service_health.verdict(report(), refused)[2] == ["HTTP URLError (refused)"]
    assert service_health.verdict(report(), {"status": 503, "avg_ms": 5.0})[2] == [
        "HTTP status 503"
    ]
    assert service_health.verdict(report(), refused, ignore=["http"])[0] is True
