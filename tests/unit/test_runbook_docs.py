"""docs/runbooks.md and the playbooks stay in step: every runbook playbook is documented with a
command, every playbook and module the page names exists, and every playbook header lists its
variables and an example."""

import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOC = open(os.path.join(REPO, "docs", "runbooks.md"), encoding="utf-8").read()
PLAYBOOKS = os.path.join(REPO, "playbooks")
MODULES = os.path.join(
    REPO, "collections", "ansible_collections", "ffmpeg_api", "ops", "plugins", "modules"
)
NOT_RUNBOOKS = {"site.yml", "monitoring.yml", "smoke_test.yml"}


def runbook_playbooks():
    return sorted(f for f in os.listdir(PLAYBOOKS) if f.endswith(".yml") and f not in NOT_RUNBOOKS)


def test_every_runbook_playbook_has_a_command_in_the_doc():
    for name in runbook_playbooks():
        assert f"playbooks/{name}" in DOC, f"docs/runbooks.md has no command for {name}"


def test_every_playbook_the_doc_names_exists():
    for name in set(re.findall(r"playbooks/([a-z0-9_]+\.yml)", DOC)):
        assert os.path.exists(os.path.join(PLAYBOOKS, name)), name
    for name in set(re.findall(r"`([a-z0-9_]+\.yml)", DOC)):
        assert os.path.exists(os.path.join(PLAYBOOKS, name)), name


def test_every_module_the_doc_names_exists():
    table = [line for line in DOC.splitlines() if line.startswith("| ") and "`" in line]
    names = {m for line in table for m in re.findall(r"`([a-z_]+)`", line.split("|")[3])}
    assert names, "the table names no module"
    for name in names:
        assert os.path.exists(os.path.join(MODULES, f"{name}.py")), name


def test_every_runbook_playbook_documents_its_variables_and_an_example():
    for name in runbook_playbooks():
        with open(os.path.join(PLAYBOOKS, name), encoding="utf-8") as fh:
            header = []
            for line in fh.read().splitlines()[1:]:
                if not line.startswith("#"):
                    break
                header.append(line)
        text = "\n".join(header)
        assert "Example" in text and "ansible-playbook" in text, f"{name}: no example command"
        assert "Variables" in text or "variables" in text, f"{name}: variables not listed"
