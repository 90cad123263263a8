"""Print the fleet's timings (image build, deploys, scale-out, rolling restart) and figures
(jobs per worker, requests during the rolling restart) at the end of the session."""

from __future__ import annotations


def pytest_terminal_summary(terminalreporter):
    from test_fleet import FIGURES, TIMINGS

    if not TIMINGS and not FIGURES:
        return
    terminalreporter.section("fleet timings")
    for name, seconds in TIMINGS.items():
        terminalreporter.write_line(f"{name:34s} {seconds:7.1f} s")
    for name, value in FIGURES.items():
        terminalreporter.write_line(f"{name:34s} {value}")
