#!/usr/bin/python
# Copyright: FFmpeg API Ops team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: pg_pitr
short_description: Base backups and point-in-time recovery of the local PostgreSQL cluster
description:
  - With I(state=present), takes a base backup of the whole cluster with C(pg_basebackup)
    (plain format, WAL streamed, fast checkpoint) into I(base_dir) as C(base_<YYYYmmdd_HHMMSS>),
    with C(base_<...>.json) beside it recording when it started and finished. WAL archiving must
    be on (the C(postgresql) role's C(postgresql_wal_archiving)); the module refuses otherwise,
    since a base backup without archived WAL can only restore to its own end.
  - With I(state=restored), recovers the cluster to I(target_time) - forces a WAL switch and
    waits for it to be archived (when the server runs), stops the cluster, moves its data
    directory aside as the safety copy (its path is returned), lays down the newest base backup
    that finished before the target, writes C(recovery.signal) with C(restore_command),
    C(recovery_target_time) and C(recovery_target_action=promote), starts the cluster, and waits
    until recovery has finished and the server is promoted. It then removes the recovery
    settings again (one more restart, so no setting stays pending) and records the restore.
  - Restoring to the same I(target_time) again reports C(changed=false) while the cluster is
    still on the timeline that restore created.
version_added: "1.0.0"
author:
  - FFmpeg API Ops team (@ffmpeg-api-ops)
extends_documentation_fragment:
  - ffmpeg_api.ops.postgres_local
options:
  state:
    description:
      - C(present) takes a base backup (subject to I(min_interval)) and applies retention.
      - C(restored) recovers the cluster to I(target_time).
      - Both return the complete base backups (C(base_backups)); in check mode nothing is touched,
        so C(check_mode=true) with I(state=present) lists them safely.
    type: str
    choices: [present, restored]
    default: present
  base_dir:
    description: Directory of the base backups (created owner I(os_user), mode 0700).
    type: path
    default: /var/lib/postgresql/pitr-base
  wal_archive_dir:
    description:
      Where C(archive_command) copies WAL segments (the role's C(postgresql_wal_archive_dir)).
    type: path
    default: /var/lib/postgresql/wal-archive
  cluster_version:
    description: Major version of the Debian cluster.
    type: str
    default: "15"
  cluster_name:
    description: Name of the Debian cluster.
    type: str
    default: main
  data_dir:
    description: The cluster's data directory. Default C(/var/lib/postgresql/<version>/<name>).
    type: path
  target_time:
    description:
      - With I(state=restored), the time to recover to (ISO 8601; without an offset it is UTC).
        Transactions committed after it are not replayed.
    type: str
  min_interval:
    description:
      With I(state=present), seconds during which a base backup is recent enough that no new one
      is taken.
    type: int
    default: 0
  retention_count:
    description:
      Keep at most this many base backups (the newest always stays); C(0) keeps any number.
    type: int
    default: 0
  wal_cleanup:
    description:
      - With I(state=present), after a new base backup is taken, remove the archived WAL older
        than the oldest base backup kept (C(pg_archivecleanup)); nothing before that backup can
        be recovered anyway, and the archive otherwise grows without end.
      - Leave it off when base backups kept elsewhere share the same WAL archive.
    type: bool
    default: false
  recovery_timeout:
    description: Seconds to wait for recovery to reach the target and promote.
    type: int
    default: 600
  force:
    description:
      With I(state=restored), recover again even when the last restore was to the same target.
    type: bool
    default: false
attributes:
  check_mode:
    description:
      Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details:
      Reports the base backup it would take, or the base backup and safety copy a restore would
      use; touches nothing.
  diff_mode:
    description:
      Will return details on what has changed (or possibly needs changing in check_mode), when in
      diff mode.
    support: full
    details: The base backups before and after, or the target the cluster was last recovered to.
  idempotent:
    description:
      When run twice in a row outside check mode with the same arguments, the second run reports
      no change.
    support: partial
    details: Restoring is idempotent (recorded target and timeline). A base backup is a change by
      nature unless I(min_interval) finds a recent one.
notes:
  - The restore stops the whole cluster; stop the service's api and workers first (the
    C(point_in_time_recovery.yml) playbook does).
  - Safety copies (C(<data_dir>.pre-pitr-<timestamp>)) are kept; remove them by hand once the
    restored cluster is verified.
seealso:
  - module: ffmpeg_api.ops.pg_backup
"""

EXAMPLES = r"""
- name: Take a base backup unless one is less than a day old; keep 3
  ffmpeg_api.ops.pg_pitr:
    state: present
    min_interval: 86400
    retention_count: 3

- name: Recover the cluster to just before the bad migration
  ffmpeg_api.ops.pg_pitr:
    state: restored
    target_time: "2025-01-27 11:59:00+00"
  register: pitr

- name: Show the safety copy of the data directory
  ansible.builtin.debug:
    msg: "{{ pitr.safety_copy }}"
"""

RETURN = r"""
base_backup:
  description: The base backup taken, or the one a restore used (name, path, start_time, end_time).
  returned: when one was taken or chosen
  type: dict
base_backups:
  description: Complete base backups, newest first.
  returned: always
  type: list
  elements: dict
wal_removed:
  description: How many archived WAL files I(wal_cleanup) removed.
  returned: state=present
  type: int
removed:
  description: Base backups retention removed.
  returned: state=present
  type: list
  elements: str
skipped_reason:
  description: Why no base backup was taken.
  returned: when state=present took none
  type: str
safety_copy:
  description:
    Where the data directory was moved before the restore (the path it would get, in check mode).
  returned: state=restored and a restore was done
  type: str
timeline:
  description: The cluster's timeline after the restore (a new one per recovery).
  returned: state=restored
  type: int
recovery_stop:
  description: PostgreSQL's log line telling where recovery stopped.
  returned: state=restored and a restore was done
  type: str
last_restore:
  description:
    The record of the last restore (target_time, base_backup, timeline, system_identifier).
  returned: always
  type: dict
"""

import json
import os
import shutil
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.ffmpeg_api.ops.plugins.module_utils import pg_files
from ansible_collections.ffmpeg_api.ops.plugins.module_utils.pg_local import (
    PgLocal,
    postgres_local_argument_spec,
)

RECOVERY_SETTINGS = ("restore_command", "recovery_target_time", "recovery_target_action")
STATE_FILE = "last_restore.json"


class Cluster(object):
    def __init__(self, module):
        self.module = module
        p = module.params
        self.pg = PgLocal(module)
        self.version = p["cluster_version"]
        self.name = p["cluster_name"]
        self.data_dir = p["data_dir"] or "/var/lib/postgresql/%s/%s" % (self.version, self.name)
        self.base_dir = p["base_dir"]
        self.archive_dir = p["wal_archive_dir"]
        self.bin_dir = "/usr/lib/postgresql/%s/bin" % self.version
        self.log_file = "/var/log/postgresql/postgresql-%s-%s.log" % (self.version, self.name)

    # -- base backups -------------------------------------------------------------------------
    def base_backups(self):
        found = []
        if not os.path.isdir(self.base_dir):
            return found
        for name in os.listdir(self.base_dir):
            if not (name.startswith(pg_files.BASE_PREFIX) and name.endswith(".json")):
                continue
            path = os.path.join(self.base_dir, name[: -len(".json")])
            if not os.path.isdir(path):
                continue
            with open(os.path.join(self.base_dir, name)) as fh:
                meta = json.load(fh)
            meta["path"] = path
            found.append(meta)
        return pg_files.sort_newest_first(found, key="timestamp")

    def archiving_problem(self):
        settings = dict(
            (r["name"], r["setting"])
            for r in self.pg.rows(
                "SELECT name, setting FROM pg_settings WHERE name IN ('archive_mode', 'wal_level')",
                database="postgres",
            )
        )
        if (
            settings.get("archive_mode") not in ("on", "always")
            or settings.get("wal_level") == "minimal"
        ):
            return (
                "WAL archiving is off (archive_mode=%s, wal_level=%s): "
                "turn on the postgresql role's "
                "postgresql_wal_archiving and deploy, then take the base backup"
                % (settings.get("archive_mode"), settings.get("wal_level"))
            )
        return None

    def take_base_backup(self):
        self.pg.ensure_dir(self.base_dir)
        stamp = pg_files.format_timestamp(pg_files.utcnow())
        name = pg_files.BASE_PREFIX + stamp
        path = os.path.join(self.base_dir, name)
        partial = path + ".partial"
        if os.path.exists(partial):
            shutil.rmtree(partial)
        self.pg.run(
            [
                self.pg.tool("pg_basebackup"),
                "-p",
                str(self.pg.port),
                "-D",
                partial,
                "-F",
                "p",
                "-X",
                "stream",
                "-c",
                "fast",
                "--no-password",
            ]
        )
        end = pg_files.utcnow()
        with open(os.path.join(partial, "backup_label")) as fh:
            label = pg_files.parse_backup_label(fh.read())
        os.rename(partial, path)
        meta = dict(
            name=name,
            timestamp=stamp,
            start_time=label.get("START TIME"),
            start_wal=label.get("START WAL LOCATION"),
            end_time=end.isoformat(),
        )
        with open(path + ".json", "w") as fh:
            json.dump(meta, fh, indent=2)
        meta["path"] = path
        return meta

    def clean_archive(self):
        """Remove archived WAL older than the oldest kept base backup; how many files went."""
        bases = self.base_backups()
        if not bases or not os.path.isdir(self.archive_dir):
            return 0
        oldest = pg_files.start_walfile(bases[-1].get("start_wal"))
        if not oldest:
            return 0
        before = len(os.listdir(self.archive_dir))
        self.pg.run([self.pg.tool("pg_archivecleanup"), self.archive_dir, oldest])
        return before - len(os.listdir(self.archive_dir))

    # -- restore ------------------------------------------------------------------------------
    def control_data(self):
        """(system identifier, timeline) from pg_controldata; (None, None) without a data dir."""
        if not os.path.isdir(self.data_dir):
            return None, None
        rc, out, _err = self.pg.run(
            [os.path.join(self.bin_dir, "pg_controldata"), "-D", self.data_dir],
            check=False,
            environ_update=dict(LC_ALL="C"),
        )
        if rc != 0:
            return None, None
        fields = pg_files.parse_backup_label(out)
        timeline = fields.get("Latest checkpoint's TimeLineID")
        return fields.get("Database system identifier"), int(timeline) if timeline else None

    def last_restore(self):
        try:
            with open(os.path.join(self.base_dir, STATE_FILE)) as fh:
                return json.load(fh)
        except (IOError, OSError, ValueError):
            return None

    def ctl(self, action, check=True):
        argv = [
            self.module.get_bin_path("pg_ctlcluster", required=True),
            self.version,
            self.name,
            action,
        ]
        if action in ("stop", "restart"):
            argv += ["-m", "fast"]
        rc, out, err = self.module.run_command(argv)
        if check and rc != 0:
            self.fail(
                "pg_ctlcluster %s %s %s failed: %s"
                % (self.version, self.name, action, (err or out).strip())
            )
        return rc

    def log_tail(self, lines=30):
        try:
            with open(self.log_file) as fh:
                return fh.readlines()[-lines:]
        except (IOError, OSError):
            return []

    def fail(self, msg, **extra):
        self.module.fail_json(
            msg=msg, log_tail=[line.rstrip() for line in self.log_tail()], **extra
        )

    def wait(self, what, check, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if check():
                return
            time.sleep(0.5)
        self.fail("timed out after %s s waiting for %s" % (timeout, what))

    def archive_current_wal(self):
        walfile = self.pg.value("SELECT pg_walfile_name(pg_switch_wal()) AS w", database="postgres")
        self.wait(
            "WAL segment %s to be archived" % walfile,
            lambda: os.path.exists(os.path.join(self.archive_dir, walfile)),
            120,
        )
        return walfile

    def in_recovery(self):
        rc, out, _err = self.pg.run(
            self.pg.psql_argv("SELECT pg_is_in_recovery()", database="postgres"), check=False
        )
        return None if rc != 0 else out.strip() == "t"

    def restore(self, base, target, safety):
        log_offset = os.path.getsize(self.log_file) if os.path.exists(self.log_file) else 0
        if self.pg.is_ready():
            self.archive_current_wal()
            self.ctl("stop")
        os.rename(self.data_dir, safety)
        # copytree keeps modes; ownership is set below (the copy runs as root)
        shutil.copytree(base["path"], self.data_dir, symlinks=True)
        os.chmod(self.data_dir, 0o700)
        for root, dirs, files in os.walk(self.data_dir):
            for entry in dirs + files:
                os.lchown(
                    os.path.join(root, entry), self.pg.user_entry.pw_uid, self.pg.user_entry.pw_gid
                )
        self.pg.chown_to_user(self.data_dir)
        for leftover in ("backup_manifest",):
            if os.path.exists(os.path.join(self.data_dir, leftover)):
                os.remove(os.path.join(self.data_dir, leftover))
        with open(os.path.join(self.data_dir, "postgresql.auto.conf"), "a") as fh:
            fh.write(
                "\n# point-in-time recovery by ffmpeg_api.ops.pg_pitr (removed once recovered)\n"
                "restore_command = 'cp %s/%%f \"%%p\"'\n"
                "recovery_target_time = '%s'\n"
                "recovery_target_action = 'promote'\n"
                % (self.archive_dir, pg_files.postgres_time(target))
            )
        open(os.path.join(self.data_dir, "recovery.signal"), "w").close()
        for name in ("recovery.signal", "postgresql.auto.conf"):
            self.pg.chown_to_user(os.path.join(self.data_dir, name))
        if self.ctl("start", check=False) != 0:
            self.fail(
                "the cluster did not start for recovery to %s; the previous data directory is %s"
                % (pg_files.postgres_time(target), safety),
                safety_copy=safety,
            )
        timeout = self.module.params["recovery_timeout"]
        self.wait(
            "recovery to finish and the server to be promoted",
            lambda: self.in_recovery() is False,
            timeout,
        )
        for setting in RECOVERY_SETTINGS:  # ALTER SYSTEM refuses to run in a transaction block
            self.pg.execute("ALTER SYSTEM RESET %s" % setting, database="postgres")
        self.ctl("restart")
        self.wait("the cluster to accept connections", self.pg.is_ready, 60)
        stop_line = None
        try:
            with open(self.log_file) as fh:
                fh.seek(log_offset)
                for line in fh:
                    if "recovery stopping" in line:
                        stop_line = line.strip()
        except (IOError, OSError):
            pass
        return stop_line


def present(module, c, result):
    p = module.params
    bases = c.base_backups()
    before = [b["name"] for b in bases]
    recent = pg_files.newest_within([b["timestamp"] for b in bases], p["min_interval"])
    if recent:
        result["base_backup"] = next(b for b in bases if b["timestamp"] == recent)
        result["skipped_reason"] = "base backup %s is less than %s s old" % (
            recent,
            p["min_interval"],
        )
        result["removed"] = []
        return
    if not c.pg.is_ready():
        module.fail_json(
            msg="the cluster %s/%s is not running: a base backup needs it up" % (c.version, c.name)
        )
    problem = c.archiving_problem()
    if problem:
        module.fail_json(msg=problem)
    result["changed"] = True
    if module.check_mode:
        stamp = pg_files.format_timestamp(pg_files.utcnow())
        result["base_backup"] = dict(
            name=pg_files.BASE_PREFIX + stamp,
            timestamp=stamp,
            path=os.path.join(c.base_dir, pg_files.BASE_PREFIX + stamp),
        )
        stamps = [stamp] + [b["timestamp"] for b in bases]
    else:
        result["base_backup"] = c.take_base_backup()
        stamps = [b["timestamp"] for b in c.base_backups()]
    expired = pg_files.select_expired(stamps, p["retention_count"])
    result["removed"] = [os.path.join(c.base_dir, pg_files.BASE_PREFIX + s) for s in expired]
    if not module.check_mode:
        for path in result["removed"]:
            os.remove(path + ".json")  # first: without it the directory no longer counts
            shutil.rmtree(path)
    result["wal_removed"] = 0
    if p["wal_cleanup"] and not module.check_mode:
        result["wal_removed"] = c.clean_archive()
    after = [pg_files.BASE_PREFIX + s for s in stamps if s not in expired]
    result["diff"] = dict(
        before="\n".join(before) + "\n", after="\n".join(sorted(after, reverse=True)) + "\n"
    )


def restored(module, c, result):
    p = module.params
    if not p["target_time"]:
        module.fail_json(msg="state=restored needs target_time")
    try:
        target = pg_files.parse_target_time(p["target_time"])
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    if target >= pg_files.utcnow():
        module.fail_json(msg="target_time %s is in the future" % pg_files.postgres_time(target))
    last = c.last_restore()
    system_id, timeline = c.control_data()
    result["timeline"] = timeline
    if (
        last
        and not p["force"]
        and last.get("target_time") == pg_files.postgres_time(target)
        and last.get("timeline") == timeline
        and last.get("system_identifier") == system_id
    ):
        result["base_backup"] = last.get("base_backup")
        return
    bases = c.base_backups()
    base = pg_files.choose_base_backup(bases, target)
    if base is None:
        module.fail_json(
            msg="no base backup in %s finished before %s (have: %s): "
            "the cluster cannot be recovered to that time"
            % (
                c.base_dir,
                pg_files.postgres_time(target),
                ", ".join(b["end_time"] for b in bases) or "none",
            )
        )
    result["base_backup"] = base
    stamp = pg_files.format_timestamp(pg_files.utcnow())
    safety = "%s.pre-pitr-%s" % (c.data_dir, stamp)
    result["safety_copy"] = safety
    result["changed"] = True
    result["diff"] = dict(
        before="recovered_to: %s\n" % (last.get("target_time") if last else "none"),
        after="recovered_to: %s\n" % pg_files.postgres_time(target),
    )
    if module.check_mode:
        return
    if os.path.exists(safety):
        module.fail_json(msg="%s already exists" % safety)
    result["recovery_stop"] = c.restore(base, target, safety)
    system_id, timeline = c.control_data()
    result["timeline"] = timeline
    record = dict(
        target_time=pg_files.postgres_time(target),
        base_backup=base,
        timeline=timeline,
        system_identifier=system_id,
        safety_copy=safety,
        restored_at=pg_files.utcnow().isoformat(),
    )
    with open(os.path.join(c.base_dir, STATE_FILE), "w") as fh:
        json.dump(record, fh, indent=2)


def main():
    argument_spec = postgres_local_argument_spec()
    argument_spec.update(
        state=dict(type="str", default="present", choices=["present", "restored"]),
        base_dir=dict(type="path", default="/var/lib/postgresql/pitr-base"),
        wal_archive_dir=dict(type="path", default="/var/lib/postgresql/wal-archive"),
        cluster_version=dict(type="str", default="15"),
        cluster_name=dict(type="str", default="main"),
        data_dir=dict(type="path"),
        target_time=dict(type="str"),
        min_interval=dict(type="int", default=0),
        retention_count=dict(type="int", default=0),
        wal_cleanup=dict(type="bool", default=False),
        recovery_timeout=dict(type="int", default=600),
        force=dict(type="bool", default=False),
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        required_if=[("state", "restored", ["target_time"])],
    )
    c = Cluster(module)
    result = dict(changed=False)
    if module.params["state"] == "present":
        present(module, c, result)
    elif module.params["state"] == "restored":
        restored(module, c, result)
    result["base_backups"] = c.base_backups()
    result["last_restore"] = c.last_restore()
    module.exit_json(**result)


if __name__ == "__main__":
    main()
