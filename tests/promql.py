"""PromQL and monitoring-role helpers shared by the unit and runbooks tests (importable as
`promql`): the metric names an expression reads, the dashboards' queries, and rendering the
monitoring role's templates with its own defaults."""

from __future__ import annotations

import glob
import json
import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROLE = os.path.join(REPO, "roles", "monitoring")
DASHBOARDS = os.path.join(ROLE, "files", "grafana", "dashboards")

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"(?<![\w.:])([A-Za-z_:][A-Za-z0-9_:]*)(?![\w:]|\s*\()")
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or"}
_KEYWORDS |= {"unless", "offset", "inf", "nan", "atan2", "e"}


def metric_names(expr: str) -> set[str]:
    """Names of the metrics a PromQL expression selects (functions, aggregations, label
    names, keywords and durations are not metrics)."""
    text = _STRINGS.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    names = set()
    for match in _IDENT.finditer(text):
        name = match.group(1)
        if name.lower() in _KEYWORDS or re.fullmatch(r"[0-9.]+[eE]?", name):
            continue
        names.add(name)
    return names


def dashboard_exprs() -> list[tuple[str, str, str]]:
    """(dashboard file, panel title, expr) of every query of every dashboard."""
    found = []
    for path in sorted(glob.glob(os.path.join(DASHBOARDS, "*.json"))):
        with open(path, encoding="utf-8") as fh:
            board = json.load(fh)
        for panel in board.get("panels", []):
            for target in panel.get("targets", []):
                found.append((os.path.basename(path), panel["title"], target["expr"]))
    return found


def render(template: str, dest: str, **extra_vars) -> str:
    """Render one of the role's templates with the role's defaults and vars (plus extra_vars)
    through Ansible's own template module on this machine; returns the rendered text."""
    argv = [
        os.path.join(os.path.dirname(sys.executable), "ansible"),
        "localhost",
        "-c",
        "local",
        "-m",
        "ansible.builtin.template",
        "-a",
        f"src={os.path.join(ROLE, 'templates', template)} dest={dest}",
        "-e",
        "@" + os.path.join(ROLE, "defaults", "main.yml"),
        "-e",
        "@" + os.path.join(ROLE, "vars", "main.yml"),
        "-e",
        json.dumps({"ansible_python_interpreter": sys.executable, **extra_vars}),
    ]
    proc = subprocess.run(
        argv,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "ANSIBLE_CONFIG": os.path.join(REPO, "ansible.cfg")},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with open(dest, encoding="utf-8") as fh:
        return fh.read()
