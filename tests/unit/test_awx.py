"""AWX job templates as code and the execution environment (extensions/awx, extensions/ee).

No AWX server is reachable here, so these tests check the data AWX would receive: every runbook
playbook has a job template whose survey asks for exactly the variables the playbook reads (the
rule is extensions/awx/playbook_inputs.py's docstring), with the playbook's types, defaults and
choices; configure.yml passes syntax-check and ansible-lint; `ansible-builder create` produces a
build context with the collections, Python and system packages the runbooks need.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
AWX = REPO / "extensions" / "awx"
EE_FILE = REPO / "extensions" / "ee" / "execution-environment.yml"
BIN = Path(sys.executable).parent

_spec = importlib.util.spec_from_file_location("playbook_inputs", AWX / "playbook_inputs.py")
playbook_inputs = importlib.util.module_from_spec(_spec)
sys.modules["playbook_inputs"] = playbook_inputs  # dataclasses look their module up there
_spec.loader.exec_module(playbook_inputs)

DATA = yaml.safe_load((AWX / "job_templates.yml").read_text())
TEMPLATES = {Path(t["playbook"]).name: t for t in DATA["awx_job_templates"]}
REPO_DEFINED = playbook_inputs._repo_defined()
RUNBOOKS = [p.name for p in playbook_inputs.runbook_playbooks()]

AWX_TYPES = {"text", "textarea", "password", "integer", "float", "multiplechoice", "multiselect"}
BOOL_CHOICES = ["true", "false"]
# How YAML and Ansible spell booleans: an assert may list them all for a boolean input.
BOOL_SPELLINGS = {"true", "false", "True", "False", "yes", "no", "on", "off", "1", "0"}


def _tool(name: str) -> str:
    path = BIN / name
    found = str(path) if path.exists() else shutil.which(name)
    assert found, f"{name} is not installed (pip install -e '.[test]')"
    return found


def survey_mismatches(template: dict, inputs: set[str], read: set[str]) -> list[str]:
    """What is wrong between a job template's survey and its playbook's inputs."""
    asked = [q["variable"] for q in template["survey"]]
    problems = [f"asked twice: {v}" for v in sorted({v for v in asked if asked.count(v) > 1})]
    problems += [f"not asked: {v}" for v in sorted(inputs - set(asked))]
    problems += [f"asked but not an input: {v}" for v in sorted(set(asked) - inputs)]
    problems += [f"asked but never read: {v}" for v in sorted(set(asked) - read)]
    return problems


def asserted_choices(path: Path) -> dict[str, list[str]]:
    """`var [| filter ...] in ['a', 'b']` in the playbook's asserts: the values it accepts."""
    found: dict[str, list[str]] = {}
    for play in yaml.safe_load(path.read_text()):
        for task in playbook_inputs._tasks(play.get("tasks")):
            args = task.get("ansible.builtin.assert") or {}
            that = args.get("that", [])
            for cond in [that] if isinstance(that, str) else that:
                pattern = r"\b([a-z_][a-z0-9_]*)(?:\s*\|\s*[a-z_]+)*\s+in\s+\[([^\]]*)\]"
                for m in re.finditer(pattern, cond):
                    found.setdefault(m.group(1), re.findall(r"'([^']*)'", m.group(2)))
    return found


def jinja_code(path: Path) -> list[str]:
    """The Jinja code of a playbook: bare conditions and the inside of {{ }} / {% %}."""
    code = []
    for expr, bare in playbook_inputs.expressions(yaml.safe_load(path.read_text())):
        if bare:
            code.append(expr)
        else:
            code += [a or b for a, b in re.findall(r"{{(.*?)}}|{%(.*?)%}", expr, re.S)]
    return code


def unfiltered_booleans(code: str, variables: list[str]) -> list[str]:
    """Reads of the variables that do not go through `| bool` (a string "false" is true)."""
    unfiltered = []
    for v in variables:
        for m in re.finditer(rf"(?<![\w.'\"]){v}\b([^\n]*)", code):
            rest = m.group(1)
            if re.match(r"\s*(\|\s*default\([^)]*\)\s*)?\|\s*bool\b", rest):
                continue
            # The assert that accepts every boolean spelling reads it as a string on purpose.
            if re.match(r"\s*\|\s*string\s*\|\s*lower\s+in\s+\[", rest):
                continue
            unfiltered.append(f"{v}{rest[:40]}")
    return unfiltered


def question_problems(q: dict, play_default, has_literal_default: bool, choices) -> list[str]:
    """A question against the playbook's default (when literal) and asserted choices."""
    v, problems = q["variable"], []
    if q["type"] not in AWX_TYPES:
        problems.append(f"{v}: unknown survey type {q['type']}")
    if not q.get("question_name") or not isinstance(q.get("required"), bool):
        problems.append(f"{v}: needs question_name and required: true/false")
    if q["type"] in ("multiplechoice", "multiselect") and not q.get("choices"):
        problems.append(f"{v}: {q['type']} without choices")
    if q["type"] == "multiplechoice" and "default" in q and q["default"] not in q["choices"]:
        problems.append(f"{v}: default {q['default']!r} is not one of the choices")
    if has_literal_default:
        if isinstance(play_default, bool):
            if q["type"] != "multiplechoice" or q["choices"] != BOOL_CHOICES:
                problems.append(f"{v}: a boolean must be a multiplechoice of {BOOL_CHOICES}")
            expected = str(play_default).lower()
        elif isinstance(play_default, int):
            if q["type"] not in ("integer", "float"):
                problems.append(
                    f"{v}: the playbook's default is a number, the question {q['type']}"
                )
            expected = play_default
        elif isinstance(play_default, list):
            if q["type"] not in ("multiselect", "text", "textarea"):
                problems.append(f"{v}: a list must be multiselect or comma-separated text")
            expected = ",".join(play_default) if q["type"] == "text" else "\n".join(play_default)
        else:
            expected = play_default
        if "default" in q and q["default"] != expected:
            problems.append(f"{v}: default {q['default']!r}, the playbook's is {expected!r}")
    elif "default" in q:
        problems.append(f"{v}: the playbook computes its default; the question must not set one")
    if choices is not None and q["type"] in ("multiplechoice", "multiselect"):
        if not set(q["choices"]) <= set(choices):
            problems.append(
                f"{v}: choices {q['choices']} beyond what the playbook accepts {choices}"
            )
        missing = set(choices) - BOOL_SPELLINGS - set(q["choices"])
        if missing:
            problems.append(f"{v}: the playbook also accepts {sorted(missing)}")
    if q["type"] in ("integer", "float") and "default" in q and "min" in q:
        if q["default"] < q["min"]:
            problems.append(f"{v}: default below min")
    return problems


# --- the rule itself -------------------------------------------------------------------------


def test_the_rule_finds_documented_literal_and_undeclared_inputs(tmp_path):
    playbook = tmp_path / "demo.yml"
    playbook.write_text(
        "---\n"
        "# Demo.\n"
        "#\n"
        "# Variables:\n"
        "#   demo_mode        quick | deep (default quick)\n"
        "#   demo_key, demo_secret  credentials, the description goes on\n"
        "#                    over_a_continuation line that is not a variable\n"
        "#\n"
        "- name: Demo\n"
        "  hosts: all\n"
        "  vars:\n"
        "    demo_mode: quick\n"
        "    demo_key: ''\n"
        "    demo_secret: ''\n"
        "    demo_cli: /usr/local/bin/x\n"
        "    demo_lb: \"{{ groups['lb'][0] }}\"\n"
        "    demo_unused: 3\n"
        "    _demo_private: 1\n"
        "  tasks:\n"
        "    - name: Use them\n"
        "      ansible.builtin.command:\n"
        "        '{{ demo_cli }} {{ demo_mode }} {{ demo_lb }} {{ _demo_private }}'\n"
        "      register: demo_out\n"
        "      when: demo_force | default(false) | bool and api_port is defined\n"
        "    - name: Later\n"
        "      ansible.builtin.set_fact:\n"
        "        demo_fact: '{{ demo_out.stdout }}'\n"
        "    - name: Loop\n"
        "      ansible.builtin.debug:\n"
        "        msg: '{% for x in demo_list | default([]) %}{{ x }}{% endfor %}{{ demo_fact }}'\n"
    )
    result = playbook_inputs.analyse(playbook, REPO_DEFINED)
    assert result.documented == ["demo_mode", "demo_key", "demo_secret"]
    # documented + literal default read by a task + read but defined nowhere; not the derived
    # demo_lb, the unread demo_unused, the private one, registers, facts, role variables.
    assert result.inputs == {
        "demo_mode",
        "demo_key",
        "demo_secret",
        "demo_cli",
        "demo_force",
        "demo_list",
    }
    template = {"survey": [{"variable": "demo_mode"}, {"variable": "demo_unused"}]}
    assert survey_mismatches(template, result.inputs, result.read) == [
        "not asked: demo_cli",
        "not asked: demo_force",
        "not asked: demo_key",
        "not asked: demo_list",
        "not asked: demo_secret",
        "asked but not an input: demo_unused",
        "asked but never read: demo_unused",
    ]


def test_boolean_check_catches_a_read_without_bool():
    code = "x_force | bool\nx_force | default(false) | bool\nnot x_force\nh.x_force\n'x_force'"
    assert unfiltered_booleans(code, ["x_force"]) == ["x_force"]


def test_question_checks_catch_wrong_types_defaults_and_choices():
    boolean = {
        "variable": "b",
        "question_name": "B",
        "required": True,
        "type": "text",
        "default": "yes",
    }
    assert question_problems(boolean, True, True, None) == [
        "b: a boolean must be a multiplechoice of ['true', 'false']",
        "b: default 'yes', the playbook's is 'true'",
    ]
    derived = {
        "variable": "u",
        "question_name": "U",
        "required": False,
        "type": "text",
        "default": "x",
    }
    assert question_problems(derived, None, False, None) == [
        "u: the playbook computes its default; the question must not set one"
    ]
    choice = {
        "variable": "m",
        "question_name": "M",
        "required": True,
        "type": "multiplechoice",
        "choices": ["quick", "slow"],
        "default": "quick",
    }
    assert question_problems(choice, "quick", True, ["quick", "deep"]) == [
        "m: choices ['quick', 'slow'] beyond what the playbook accepts ['quick', 'deep']",
        "m: the playbook also accepts ['deep']",
    ]


# --- the job templates -----------------------------------------------------------------------


def test_every_runbook_playbook_has_exactly_one_job_template():
    playbooks = [Path(t["playbook"]).name for t in DATA["awx_job_templates"]]
    assert sorted(playbooks) == sorted(RUNBOOKS)
    assert len(set(playbooks)) == len(playbooks)
    names = [t["name"] for t in DATA["awx_job_templates"]]
    assert len(set(names)) == len(names)
    for t in DATA["awx_job_templates"]:
        assert (REPO / t["playbook"]).is_file(), t["playbook"]


@pytest.mark.parametrize("playbook", RUNBOOKS)
def test_survey_asks_exactly_the_variables_the_playbook_reads(playbook):
    result = playbook_inputs.analyse(REPO / "playbooks" / playbook, REPO_DEFINED)
    # Both directions: every input is asked, every question is an input the playbook reads.
    assert survey_mismatches(TEMPLATES[playbook], result.inputs, result.read) == []
    # And the header documents only variables the playbook reads.
    assert set(result.documented) <= result.read, set(result.documented) - result.read


@pytest.mark.parametrize("playbook", RUNBOOKS)
def test_questions_have_the_playbook_types_defaults_and_choices(playbook):
    path = REPO / "playbooks" / playbook
    result = playbook_inputs.analyse(path, REPO_DEFINED)
    choices = asserted_choices(path)
    problems = []
    for q in TEMPLATES[playbook]["survey"]:
        v = q["variable"]
        problems += question_problems(
            q, result.play_vars.get(v), v in result.play_vars, choices.get(v)
        )
    assert problems == []


@pytest.mark.parametrize("playbook", RUNBOOKS)
def test_boolean_answers_are_read_with_the_bool_filter(playbook):
    """AWX sends a multiplechoice answer as the string "false": only `| bool` reads it right."""
    booleans = [
        q["variable"]
        for q in TEMPLATES[playbook]["survey"]
        if q["type"] == "multiplechoice" and q["choices"] == BOOL_CHOICES
    ]
    unfiltered = unfiltered_booleans("\n".join(jinja_code(REPO / "playbooks" / playbook)), booleans)
    assert unfiltered == []


def list_reads_refusing_text(segments: list[str], variable: str) -> list[str]:
    """Reads of a list variable that would break on comma-separated text.

    A read is fine when the expression tests `is string` (and splits), or is the variable alone:
    a module option of type list splits "a,b" itself, and a message just prints it.
    """
    return [
        seg.strip()
        for seg in segments
        if re.search(rf"(?<![\w.'\"]){variable}\b", seg)
        and f"{variable} is string" not in seg
        and seg.strip() != variable
    ]


@pytest.mark.parametrize("playbook", RUNBOOKS)
def test_lists_asked_as_text_are_accepted_as_text(playbook):
    """AWX has no list question for free values: comma-separated text must work."""
    path = REPO / "playbooks" / playbook
    result = playbook_inputs.analyse(path, REPO_DEFINED)
    segments = jinja_code(path)
    problems = []
    for q in TEMPLATES[playbook]["survey"]:
        if q["type"] in ("text", "textarea") and isinstance(
            result.play_vars.get(q["variable"]), list
        ):
            problems += list_reads_refusing_text(segments, q["variable"])
    assert problems == []


def test_list_check_catches_a_read_that_needs_a_list():
    segments = [" x_block ", " x_block | length > 0 ", " x_block.split(',') if x_block is string "]
    assert list_reads_refusing_text(segments, "x_block") == ["x_block | length > 0"]


def test_required_questions_and_secrets():
    for t in DATA["awx_job_templates"]:
        for q in t["survey"]:
            if re.search(r"(secret|password|webhook_url)", q["variable"]):
                assert q["type"] == "password", q["variable"]
    maintenance = {q["variable"]: q for q in TEMPLATES["maintenance.yml"]["survey"]}
    assert maintenance["maintenance_state"]["required"] is True
    scaling = {q["variable"]: q for q in TEMPLATES["horizontal_scaling.yml"]["survey"]}
    assert scaling["horizontal_scaling_new_hosts"]["required"] is True


def test_objects_referenced_by_the_job_templates_exist():
    keys = {c["key"] for c in DATA["awx_credentials"]}
    assert set(DATA["awx_default_credentials"]) <= keys
    for t in DATA["awx_job_templates"]:
        assert set(t.get("credentials", [])) <= keys, t["name"]
    assert "vault" in keys
    assert DATA["awx_project"]["scm_credential"] in {c["name"] for c in DATA["awx_credentials"]}
    for source in DATA["awx_inventory_sources"]:
        inventory = REPO / source["source_path"]
        assert inventory.is_file(), source["source_path"]
        hosts = yaml.safe_load(inventory.read_text())
        assert {"api", "workers", "database", "loadbalancer"} <= set(hosts["all"]["children"])


def test_configure_playbook_and_ee_pass_syntax_check_and_lint():
    env = {
        "PATH": f"{BIN}:/usr/bin:/bin",
        "ANSIBLE_COLLECTIONS_PATH": f"{REPO / 'collections'}:{REPO / 'collections' / 'vendor'}",
        "HOME": str(Path.home()),
    }
    syntax = subprocess.run(
        [_tool("ansible-playbook"), "--syntax-check", str(AWX / "configure.yml")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert syntax.returncode == 0, syntax.stdout + syntax.stderr
    lint = subprocess.run(
        [
            _tool("ansible-lint"),
            "extensions/awx/configure.yml",
            "extensions/awx/job_templates.yml",
            # Checked against ansible-lint's schemas for these kinds of files.
            "extensions/ee/execution-environment.yml",
            "collections/requirements.yml",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr


# --- collections and the execution environment -----------------------------------------------


def _used_collections() -> set[str]:
    used = set()
    for path in list((REPO / "playbooks").rglob("*.yml")) + list((REPO / "roles").rglob("*.yml")):
        for m in re.finditer(r"^\s*-?\s*([a-z_]+)\.([a-z_]+)\.[a-z_0-9]+:", path.read_text(), re.M):
            used.add(f"{m.group(1)}.{m.group(2)}")
    return used - {"ansible.builtin", "ffmpeg_api.ops"}


def test_collection_requirements_cover_what_the_runbooks_use():
    required = yaml.safe_load((REPO / "collections" / "requirements.yml").read_text())
    names = {c["name"] for c in required["collections"]}
    used = _used_collections()
    assert {"amazon.aws", "community.general"} <= used  # the scan sees them
    assert used <= names, used - names
    vendored = yaml.safe_load((REPO / "requirements.yml").read_text())
    assert names <= {c["name"] for c in vendored["collections"]}
    assert "awx.awx" in {c["name"] for c in vendored["collections"]}


def test_ansible_builder_creates_the_build_context(tmp_path):
    context = tmp_path / "context"
    run = subprocess.run(
        # The file's name otherwise follows whichever container client is installed
        # (Dockerfile where only a docker binary exists): name it, so the test is the same
        # on every machine.
        [
            _tool("ansible-builder"),
            "create",
            "-f",
            str(EE_FILE),
            "-c",
            str(context),
            "--output-filename",
            "Containerfile",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    definition = yaml.safe_load(EE_FILE.read_text())
    containerfile = (context / "Containerfile").read_text()
    base = definition["images"]["base_image"]["name"]
    assert f'ARG EE_BASE_IMAGE="{base}"' in containerfile
    assert "FROM $EE_BASE_IMAGE AS base" in containerfile
    assert "ansible-galaxy collection install" in containerfile
    assert "introspect.py introspect" in containerfile
    assert re.search(r'ARG ANSIBLE_INSTALL_REFS="ansible-core[^"]*ansible-runner', containerfile)
    galaxy = yaml.safe_load((context / "_build" / "requirements.yml").read_text())
    required = yaml.safe_load((REPO / "collections" / "requirements.yml").read_text())
    assert galaxy["collections"] == required["collections"]
    python = (context / "_build" / "requirements.txt").read_text()
    for package in ("boto3", "botocore", "psycopg2"):
        assert re.search(rf"^{package}", python, re.M), package
    bindep = (context / "_build" / "bindep.txt").read_text()
    for package in ("nftables", "postgresql-client", "cloud-guest-utils", "cloud-utils-growpart"):
        assert re.search(rf"^{package}\b", bindep, re.M), package
