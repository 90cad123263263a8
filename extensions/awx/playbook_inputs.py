#!/usr/bin/env python3
"""The input variables of a runbook playbook, as an AWX survey must ask for them.

A playbook's inputs are, by this rule (tests/unit/test_awx.py holds every survey to it):

1. the variables its header documents under ``# Variables:`` (one name per line, or several
   separated by commas: ``#   resize_access_key, resize_secret_key  credentials``);
2. the play-level ``vars:`` with a literal default (no ``{{ }}``) that a task of the playbook
   reads. A templated default is derived from the inventory (``health_check_lb``) unless the
   header documents it; a play var no task reads only parametrises an included task file
   (``app_processes_state``); a ``_`` prefix marks a private one;
3. every variable the playbook reads that nothing defines: not its own vars, registers,
   set_facts or loop variables, not a role default or inventory variable of this repository,
   not an Ansible magic variable (``sev1_restore_database | default(false)``).

"Reads" means: appears as a name in a Jinja expression of the playbook (a ``{{ }}`` template or
a bare ``when`` / ``that`` / ``until`` / ``changed_when`` / ``failed_when`` condition), parsed
with Jinja's own parser. Imported playbooks (``import_playbook``) are not followed: each has
its own job template.

Run it to print the inputs of each playbook: ``python extensions/awx/playbook_inputs.py``.
"""

from __future__ import annotations

import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import yaml
from jinja2 import nodes

REPO = Path(__file__).resolve().parents[2]

# Playbooks that are not runbook procedures: no job template (docs/runbooks.md).
NOT_RUNBOOKS = {"site.yml", "monitoring.yml", "smoke_test.yml"}

CONDITION_KEYS = {"when", "that", "until", "changed_when", "failed_when"}

# Names Ansible provides: magic variables, facts, lookups/functions usable in templates.
MAGIC = {
    "ansible_check_mode",
    "ansible_diff_mode",
    "ansible_facts",
    "ansible_failed_result",
    "ansible_failed_task",
    "ansible_limit",
    "ansible_local",
    "ansible_play_name",
    "ansible_play_role_names",
    "ansible_role_names",
    "ansible_verbosity",
    "ansible_play_hosts",
    "ansible_play_hosts_all",
    "ansible_play_batch",
    "ansible_host",
    "ansible_connection",
    "ansible_loop",
    "ansible_run_tags",
    "ansible_version",
    "groups",
    "group_names",
    "hostvars",
    "inventory_hostname",
    "inventory_hostname_short",
    "item",
    "lookup",
    "query",
    "q",
    "now",
    "omit",
    "playbook_dir",
    "role_path",
    "true",
    "false",
    "none",
    "True",
    "False",
    "None",
}

_VAR_LINE = re.compile(r"^#\s{1,4}([a-z_][a-z0-9_]*(?:\s*,\s*[a-z_][a-z0-9_]*)*)(?:\s|$)")
_TEMPLATE = re.compile(r"{{|{%")

# Parsing only (nothing is rendered, so no escaping); filters and tests are not resolved.
_env = jinja2.Environment()  # noqa: S701
_READ_DEFAULT = r"\b{}\s*\|\s*default\(\s*([^,()]*?)\s*[,)]"


def header_variables(text: str) -> list[str]:
    """Names documented in the playbook's header under ``# Variables:``."""
    names: list[str] = []
    in_block = False
    for line in text.splitlines():
        if not line.startswith("#"):
            if in_block or line.strip() not in ("", "---"):
                break
            continue
        if line.strip() == "# Variables:":
            in_block = True
            continue
        if in_block:
            if line.strip() == "#":
                break
            m = _VAR_LINE.match(line)
            if m:
                names += [n.strip() for n in m.group(1).split(",")]
    return names


def _names(expr: str, bare: bool) -> set[str]:
    source = "{{ " + expr + " }}" if bare else expr
    try:
        with warnings.catch_warnings():
            # YAML-quoted regexes ('^[0-9]+\.') make the lexer warn about escapes: irrelevant.
            warnings.simplefilter("ignore", DeprecationWarning)
            ast = _env.parse(source)
    except jinja2.TemplateSyntaxError:
        return set()
    # Names bound inside the template ({% set %}, loops) are declared there, not read.
    # (meta.find_undeclared_variables would need Ansible's filters and tests registered.)
    names = {n.name: n.ctx for n in ast.find_all(nodes.Name)}
    stored = {n.name for n in ast.find_all(nodes.Name) if n.ctx in ("store", "param")}
    return {name for name in names if name not in stored}


def expressions(node, key=None):
    """Yield (expression, bare) for every Jinja expression under node."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from expressions(v, k)
    elif isinstance(node, list):
        for v in node:
            if key in CONDITION_KEYS and isinstance(v, str):
                yield v, True
            else:
                yield from expressions(v, key)
    elif isinstance(node, str):
        if key in CONDITION_KEYS:
            yield node, not _TEMPLATE.search(node)
        elif _TEMPLATE.search(node):
            yield node, False


def _tasks(items):
    for t in items or []:
        if not isinstance(t, dict):
            continue
        yield t
        for k in ("block", "rescue", "always"):
            yield from _tasks(t.get(k))


def _repo_defined() -> set[str]:
    """Variables defined by the repository's roles and inventories."""
    names: set[str] = set()
    files = list(REPO.glob("roles/*/defaults/main.yml")) + list(REPO.glob("roles/*/vars/main.yml"))
    files += [p for p in REPO.glob("inventories/**/*") if p.suffix in (".yml", ".yaml")]
    for path in files:
        data = yaml.safe_load(path.read_text()) or {}
        names |= _inventory_names(data) if "inventories" in path.parts else set(data)
    return names


def _inventory_names(data) -> set[str]:
    names: set[str] = set()
    if not isinstance(data, dict):
        return names
    for k, v in data.items():
        if k in ("hosts", "children") and isinstance(v, dict):
            for sub in v.values():
                names |= _inventory_names(sub)
        elif k == "vars" and isinstance(v, dict):
            names |= set(v)
        elif k not in ("hosts", "children"):
            names.add(k)
            if isinstance(v, dict):
                names |= _inventory_names(v)
    return names


@dataclass
class PlaybookInputs:
    path: Path
    documented: list[str]
    # Literal defaults: play vars (first play wins) and `name | default(literal)` of inputs
    # nothing defines.
    play_vars: dict[str, object] = field(default_factory=dict)
    read: set[str] = field(default_factory=set)
    inputs: set[str] = field(default_factory=set)


def analyse(path: Path, repo_defined: set[str] | None = None) -> PlaybookInputs:
    text = path.read_text()
    plays = yaml.safe_load(text)
    result = PlaybookInputs(path=path, documented=header_variables(text))
    defined: set[str] = set()
    templated_play_vars: set[str] = set()
    for play in plays:
        for k, v in (play.get("vars") or {}).items():
            defined.add(k)
            if isinstance(v, str) and _TEMPLATE.search(v):
                templated_play_vars.add(k)
            else:
                result.play_vars.setdefault(k, v)
        body = {k: v for k, v in play.items() if k != "vars"}
        for expr, bare in expressions(body):
            result.read |= _names(expr, bare)
        for k in ("pre_tasks", "tasks", "post_tasks", "handlers"):
            for task in _tasks(play.get(k)):
                defined |= set(task.get("vars") or {})
                if "register" in task:
                    defined.add(task["register"])
                for module in ("ansible.builtin.set_fact", "set_fact"):
                    if isinstance(task.get(module), dict):
                        defined |= set(task[module])
                loop_var = (task.get("loop_control") or {}).get("loop_var")
                if loop_var:
                    defined.add(loop_var)
        # Play vars read by other play vars count as read (e.g. a derived URL built from them).
        for v in (play.get("vars") or {}).values():
            for expr, bare in expressions(v):
                result.read |= _names(expr, bare)
    if repo_defined is None:
        repo_defined = _repo_defined()
    undefined_reads = {
        n
        for n in result.read
        if n not in defined and n not in repo_defined and n not in MAGIC and not n.startswith("_")
    }
    literal_read = {
        n
        for n in result.play_vars
        if n in result.read and not n.startswith("_") and n not in templated_play_vars
    }
    result.inputs = set(result.documented) | literal_read | undefined_reads
    for name in undefined_reads - set(result.play_vars):
        m = re.search(_READ_DEFAULT.format(re.escape(name)), text)
        if m and "{" not in m.group(1):
            result.play_vars[name] = yaml.safe_load(m.group(1))
    return result


def runbook_playbooks() -> list[Path]:
    return sorted(p for p in (REPO / "playbooks").glob("*.yml") if p.name not in NOT_RUNBOOKS)


def main() -> int:
    defined = _repo_defined()
    for path in runbook_playbooks():
        r = analyse(path, defined)
        extra = sorted(r.inputs - set(r.documented))
        print(f"{path.name}: {', '.join(sorted(r.inputs))}")
        if extra:
            print(f"  not in the header: {', '.join(extra)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
