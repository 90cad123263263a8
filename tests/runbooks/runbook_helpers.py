"""Helpers of the runbooks layer: run a playbook, read the deployed service, compare state.

(A module of its own, not conftest.py: the fleet layer has a conftest too, and `from conftest
import ...` would find whichever was imported first when both layers run in one session.)

The runbooks layer: each runbook playbook against the stack deployed on this machine.

Every test follows the same shape: inject the fault into the deployed stack, preview the
playbook in check mode (state before == state after), run it, show the fault repaired, run it
again (changed=0). The stack is the one `tests/deploy` leaves behind (inventories/local); when
it is missing or runs another release, the `stack` fixture deploys it first.

Tests here share one deployed stack: they must leave it as they found it (maintenance off,
rate limits back, firewall sets empty, database rows they made removed or harmless).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

import helpers

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
INVENTORY = os.path.join(REPO, "inventories", "local", "hosts.yml")
VENV_BIN = os.path.join(REPO, ".venv", "bin")
ADMIN = "/usr/local/bin/ffmpeg-api-admin"
ENV_FILE = "/etc/ffmpeg-api/ffmpeg-api.env"
# When this pytest session began (this module is imported at collection).
SESSION_STARTED = time.time()
API = "http://127.0.0.1:8080/api/v1"
RECAP = re.compile(
    r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M
)


@dataclass
class PlaybookRun:
    rc: int
    out: str
    recap: dict
    elapsed: float

    @property
    def changed(self) -> int:
        return sum(h["changed"] for h in self.recap.values())

    def changed_tasks(self) -> list[str]:
        """Names of the tasks that reported a change (for readable assertion messages)."""
        names, current = [], None
        for line in self.out.splitlines():
            if line.startswith(("TASK [", "RUNNING HANDLER [")):
                current = line
            elif line.startswith("changed:") and current:
                names.append(current)
        return names


def ansible_env(**extra: str) -> dict:
    return {
        **os.environ,
        "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}",
        "ANSIBLE_CONFIG": os.path.join(REPO, "ansible.cfg"),
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_NOCOLOR": "1",
        **extra,
    }


def playbook(
    name: str,
    *args: str,
    extra_vars: dict | None = None,
    check: bool = False,
    expect_rc: int | None = 0,
    timeout: int = 900,
) -> PlaybookRun:
    """Run playbooks/<name> against inventories/local; assert its exit code (None: any)."""
    argv = [os.path.join(VENV_BIN, "ansible-playbook"), "-i", INVENTORY]
    argv.append(os.path.join(REPO, "playbooks", name))
    if extra_vars:
        argv += ["-e", json.dumps(extra_vars)]
    if check:
        argv += ["--check", "--diff"]
    argv += list(args)
    started = time.monotonic()
    proc = subprocess.run(
        argv, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=ansible_env()
    )
    out = proc.stdout + proc.stderr
    recap = {
        m.group(1): {"changed": int(m.group(3)), "failed": int(m.group(5))}
        for m in RECAP.finditer(out)
    }
    run = PlaybookRun(proc.returncode, out, recap, time.monotonic() - started)
    if expect_rc is not None:
        assert proc.returncode == expect_rc, out[-8000:]
    return run


def service_env() -> dict:
    """The deployed service's environment file as a dict (DATABASE_URL, REDIS_URL, ...)."""
    env = {}
    with open(ENV_FILE, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                key, value = line.split("=", 1)
                env[key] = value.strip().strip("'\"")
    return env


def admin(*args: str) -> dict:
    """The deployed admin CLI with --json; fails the test on a non-zero exit."""
    proc = subprocess.run(
        [ADMIN, *args, "--json"], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def sql(query: str, params: tuple | dict | None = None) -> list[tuple]:
    """One statement against the deployed database (autocommit); rows when it returns any."""
    import psycopg

    with psycopg.connect(service_env()["DATABASE_URL"], autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def redis_client():
    import redis

    return redis.Redis.from_url(service_env()["REDIS_URL"], decode_responses=True)


def http(method: str, path: str, *, key: str | None = None, body: bytes | None = None):
    """(status, parsed JSON or raw bytes) of one request through HAProxy."""
    headers = {"X-API-Key": key} if key else {}
    if body is not None:
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(API + path, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw


STORAGE = "/var/lib/ffmpeg-api/storage"


def make_input(
    name: str, seconds: int = 2, size: str = "320x240", rate: int = 15, *, key: str
) -> str:
    """A test clip uploaded through HAProxy with `key` (a path is usable only by the user who
    uploaded it, or an admin key); its path relative to the storage root (a job's input)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="runbook-input-") as tmp:
        path = os.path.join(tmp, name)
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
             f"testsrc2=d={seconds}:s={size}:r={rate}", "-pix_fmt", "yuv420p", path],
            check=True,
            timeout=120,
        )  # fmt: skip
        with open(path, "rb") as fh:
            data = fh.read()
    req = urllib.request.Request(
        f"{API}/files?name={name}",
        data=data,
        method="POST",
        headers={"X-API-Key": key, "Content-Type": "application/octet-stream"},
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        assert resp.status == 201
        return json.loads(resp.read())["path"]


def submit_transcodes(key: str, source: str, count: int, height: int, preset: str) -> list[str]:
    """Submit count transcodes of source through HAProxy; their job ids."""
    ids = []
    for _ in range(count):
        status, body = http(
            "POST",
            "/convert",
            key=key,
            body=json.dumps(
                {
                    "input": source,
                    "output": "mp4",
                    "operations": [{"type": "transcode", "height": height, "preset": preset}],
                }
            ).encode(),
        )
        assert status in (200, 201, 202), body
        ids.append(body["id"])
    return ids


def workers_registered() -> list[str]:
    """Names of the RQ workers registered in the deployed Redis."""
    return sorted(n.removeprefix("rq:worker:") for n in redis_client().smembers("rq:workers") or [])


def api_master_pid() -> int:
    """The deployed API's gunicorn master (supervisor program ffmpeg-api); 0 when stopped."""
    out = subprocess.run(
        ["supervisorctl", "pid", "ffmpeg-api"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return int(out) if out.isdigit() else 0


def gunicorn_workers(pid: int) -> int:
    """Worker processes of a gunicorn master (its children)."""
    if not pid:
        return 0
    proc = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return len(proc.stdout.split())


def tree_digest(root: str) -> dict[str, str]:
    """path -> size:mtime_ns of every file under root (check mode must not touch any)."""
    found = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            found[os.path.relpath(path, root)] = f"{st.st_size}:{st.st_mtime_ns}"
    return found


def rows_digest(table: str, order_by: str = "1") -> str:
    """A digest of every row of a table, to compare before and after a check-mode run."""
    rows = sql(f"SELECT * FROM {table} ORDER BY {order_by}")
    return hashlib.sha256(repr(rows).encode()).hexdigest()


def wait_for(what: str, check, timeout: float = 60, interval: float = 1.0):
    return helpers.wait_for(check, timeout=timeout, interval=interval, what=what)


def assert_check_mode_changes_nothing(name: str, snapshot, **kwargs) -> PlaybookRun:
    """Run the playbook in check mode and compare snapshot() before and after."""
    before = snapshot()
    run = playbook(name, check=True, **kwargs)
    after = snapshot()
    assert before == after, f"check mode of {name} changed state"
    return run


def assert_second_run_changes_nothing(name: str, **kwargs) -> PlaybookRun:
    run = playbook(name, **kwargs)
    assert run.changed == 0, run.changed_tasks()
    return run


def _deployed_release_is_current() -> bool:
    proc = subprocess.run(
        ["python3", os.path.join(REPO, "roles", "app", "files", "release_id.py"), REPO],
        capture_output=True,
        text=True,
        check=True,
    )
    current = os.path.realpath("/opt/ffmpeg-api/current")
    return os.path.basename(current) == proc.stdout.strip()
