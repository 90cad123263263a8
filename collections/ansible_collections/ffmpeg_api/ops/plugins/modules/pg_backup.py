#!/usr/bin/python
# Copyright: FFmpeg API Ops team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: pg_backup
short_description: Create, list and restore timestamped pg_dump backups of the service's database
description:
  - Backs up the service's PostgreSQL database with C(pg_dump) in custom format into
    I(backup_dir) as C(<database>_<YYYYmmdd_HHMMSS>.dump) (UTC), with a C(.sha256) file beside
    it in C(sha256sum) format, and applies retention.
  - Every run returns the backups; M(ffmpeg_api.ops.pg_backup_info) lists them (with their
    checksums verified) without changing anything.
  - Restores the latest backup or the one of a given I(timestamp). The checksum is verified
    first; then the current database is ALWAYS dumped into C(<backup_dir>/safety/) as a safety
    backup (its path is returned); then the database is dropped (its sessions terminated) and
    recreated from the backup with C(pg_restore --create), analyzed, and counted table by table.
  - A restore leaves a comment on the database naming the backup and its checksum. Restoring
    the same backup again reports C(changed=false) (writes made since then are not undone; use
    I(force) to restore again anyway).
  - Creating a backup is by nature a change. I(min_interval) makes a scheduled or repeated run
    safe to run twice - it skips the backup while a recent one exists.
version_added: "1.0.0"
author:
  - FFmpeg API Ops team (@ffmpeg-api-ops)
extends_documentation_fragment:
  - ffmpeg_api.ops.postgres_local
options:
  state:
    description:
      - C(present) creates a backup (subject to I(min_interval)) and applies retention.
      - C(restored) restores a backup into I(database) after a safety backup.
    type: str
    choices: [present, restored]
    default: present
  backup_dir:
    description:
      - Directory of the backups; created (owner I(os_user), mode 0700) when missing.
      - Safety backups taken before restores go to its C(safety) subdirectory.
    type: path
    default: /var/backups/ffmpeg-api/postgresql
  timestamp:
    description:
      - With I(state=restored), the C(YYYYmmdd_HHMMSS) of the backup to restore. Default the latest.
    type: str
  min_interval:
    description:
      - With I(state=present), seconds during which an existing backup is recent enough that
        no new one is taken. C(0) always takes one.
    type: int
    default: 0
  retention_count:
    description:
      - Keep at most this many backups (newest first); C(0) keeps any number.
      - Applied separately to the backups and to the safety backups. The newest always stays.
    type: int
    default: 0
  retention_days:
    description:
      - Remove backups older than this many days. Unset keeps them whatever their age.
    type: int
  force:
    description:
      - With I(state=restored), restore even when the database already holds that backup.
    type: bool
    default: false
attributes:
  check_mode:
    description:
      Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: Reports the backup it would take, the backups retention would remove, or the
      restore and safety backup it would do; writes nothing.
  diff_mode:
    description:
      Will return details on what has changed (or possibly needs changing in check_mode), when in
      diff mode.
    support: full
    details: The list of backups before and after, or the backup the database was restored from.
  idempotent:
    description:
      When run twice in a row outside check mode with the same arguments, the second run reports
      no change.
    support: partial
    details: Restoring is idempotent (the database's restore marker). Creating a backup is a
      change by nature unless I(min_interval) finds a recent one.
seealso:
  - module: ffmpeg_api.ops.pg_backup_info
  - module: ffmpeg_api.ops.pg_pitr
"""

EXAMPLES = r"""
- name: Take a backup unless one is less than an hour old; keep 14, none older than 30 days
  ffmpeg_api.ops.pg_backup:
    state: present
    min_interval: 3600
    retention_count: 14
    retention_days: 30

- name: Restore the backup of 27 January 12:00 (after a safety backup of the current database)
  ffmpeg_api.ops.pg_backup:
    state: restored
    timestamp: "20250127_120000"
  register: restore

- name: Show where the safety backup went
  ansible.builtin.debug:
    msg: "{{ restore.safety_backup.path }}"
"""

RETURN = r"""
backup:
  description: The backup taken (state=present), or the backup restored (state=restored).
  returned: when a backup was taken or chosen
  type: dict
  sample:
    timestamp: "20250127_120000"
    path: /var/backups/ffmpeg-api/postgresql/ffmpeg_api_20250127_120000.dump
    size: 48213
    checksum: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
skipped_reason:
  description: Why no backup was taken (a recent one exists).
  returned: when state=present took no backup
  type: str
removed:
  description: Paths retention removed (or would remove in check mode).
  returned: state=present or restored
  type: list
  elements: str
backups:
  description: The backups, newest first, each with timestamp, path, size and recorded checksum.
  returned: always
  type: list
  elements: dict
safety_backups:
  description: The safety backups taken before restores, newest first (same fields).
  returned: always
  type: list
  elements: dict
safety_backup:
  description:
    The safety backup of the database taken before this restore (null when the database did not
    exist).
  returned: state=restored and a restore was done (in check mode, the path it would have)
  type: dict
restored_from:
  description:
    C(timestamp) and C(checksum) of the backup the database was last restored from, or null.
  returned: state=restored
  type: dict
row_counts:
  description: Rows per table of the restored database (verification).
  returned: state=restored and a restore was done
  type: dict
  sample: {"api_keys": 12, "jobs": 340, "schema_migrations": 2}
"""

import os
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.ffmpeg_api.ops.plugins.module_utils import pg_files
from ansible_collections.ffmpeg_api.ops.plugins.module_utils.pg_local import (
    PgLocal,
    postgres_local_argument_spec,
    quote_ident,
    quote_literal,
)


class Backups(object):
    def __init__(self, module):
        self.module = module
        self.pg = PgLocal(module)
        self.database = module.params["database"]
        self.dir = module.params["backup_dir"]
        self.safety_dir = os.path.join(self.dir, "safety")

    def listing(self, verify=False):
        return (
            pg_files.scan_backups(self.dir, self.database, verify),
            pg_files.scan_backups(self.safety_dir, self.database, verify),
        )

    def marker(self):
        parsed = pg_files.parse_restore_marker(self.pg.database_comment())
        return dict(timestamp=parsed[0], checksum=parsed[1]) if parsed else None

    def dump(self, directory):
        """pg_dump into directory under a fresh timestamp; the backup's dict."""
        self.pg.ensure_dir(self.dir)
        self.pg.ensure_dir(directory)
        for _attempt in range(3):
            stamp = pg_files.format_timestamp(pg_files.utcnow())
            name = pg_files.backup_filename(self.database, stamp)
            path = os.path.join(directory, name)
            if not os.path.exists(path):
                break
            time.sleep(1.1)  # one backup per second and directory: names are timestamps
        else:
            self.module.fail_json(msg="%s already exists" % path)
        partial = path + ".partial"
        self.pg.run(
            [
                self.pg.tool("pg_dump"),
                "--format=custom",
                "-p",
                str(self.pg.port),
                "-d",
                self.database,
                "-f",
                partial,
            ]
        )
        os.rename(partial, path)
        digest = pg_files.sha256_file(path)
        with open(path + pg_files.CHECKSUM_SUFFIX, "w") as fh:
            fh.write(pg_files.checksum_line(digest, name))
        os.chmod(path + pg_files.CHECKSUM_SUFFIX, 0o600)
        self.pg.chown_to_user(path + pg_files.CHECKSUM_SUFFIX)
        return dict(timestamp=stamp, path=path, size=os.path.getsize(path), checksum=digest)

    def expired(self, backups):
        p = self.module.params
        stamps = pg_files.select_expired(
            [b["timestamp"] for b in backups], p["retention_count"], p["retention_days"]
        )
        return [b["path"] for b in backups if b["timestamp"] in stamps]

    def remove(self, paths):
        for path in paths:
            for victim in (path, path + pg_files.CHECKSUM_SUFFIX):
                if os.path.exists(victim):
                    os.remove(victim)

    def row_counts(self):
        tables = self.pg.rows(
            "SELECT table_name AS t FROM information_schema.tables "
            "WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1"
        )
        if not tables:
            return {}
        query = " UNION ALL ".join(
            "SELECT %s AS t, count(*) AS n FROM public.%s"
            % (quote_literal(r["t"]), quote_ident(r["t"]))
            for r in tables
        )
        return dict((r["t"], r["n"]) for r in self.pg.rows(query))


def present(module, b, result):
    p = module.params
    backups, _safety = b.listing()
    recent = pg_files.newest_within([x["timestamp"] for x in backups], p["min_interval"])
    before = [x["timestamp"] for x in backups]
    if recent:
        result["skipped_reason"] = "backup %s is less than %s s old" % (recent, p["min_interval"])
        result["backup"] = next(x for x in backups if x["timestamp"] == recent)
        result["removed"] = []
        return
    result["changed"] = True
    if module.check_mode:
        stamp = pg_files.format_timestamp(pg_files.utcnow())
        path = os.path.join(b.dir, pg_files.backup_filename(b.database, stamp))
        result["backup"] = dict(timestamp=stamp, path=path, size=None, checksum=None)
        would_have = [dict(timestamp=stamp, path=path)] + backups
        result["removed"] = b.expired(would_have)
    else:
        if not b.pg.database_exists():
            module.fail_json(msg="database %s does not exist: nothing to back up" % b.database)
        result["backup"] = b.dump(b.dir)
        backups, _safety = b.listing()
        result["removed"] = b.expired(backups)
        b.remove(result["removed"])
    after = [result["backup"]["timestamp"]] + before
    after = [
        s
        for s in after
        if os.path.join(b.dir, pg_files.backup_filename(b.database, s)) not in result["removed"]
    ]
    result["diff"] = dict(
        before="\n".join(before) + "\n", after="\n".join(sorted(set(after), reverse=True)) + "\n"
    )


def restored(module, b, result):
    p = module.params
    backups, _safety = b.listing()
    if not backups:
        module.fail_json(msg="no backups of %s in %s" % (b.database, b.dir))
    if p["timestamp"]:
        try:
            pg_files.parse_timestamp(p["timestamp"])
        except ValueError as exc:
            module.fail_json(msg=str(exc))
        chosen = [x for x in backups if x["timestamp"] == p["timestamp"]]
        if not chosen:
            module.fail_json(
                msg="no backup with timestamp %s in %s; available: %s"
                % (p["timestamp"], b.dir, ", ".join(x["timestamp"] for x in backups))
            )
        chosen = chosen[0]
    else:
        chosen = backups[0]
    if chosen["checksum"] is None:
        module.fail_json(msg="%s has no checksum file: refusing to restore it" % chosen["path"])
    actual = pg_files.sha256_file(chosen["path"])
    if actual != chosen["checksum"]:
        module.fail_json(
            msg="checksum mismatch for %s (file %s, recorded %s): "
            "refusing to restore a damaged backup" % (chosen["path"], actual, chosen["checksum"])
        )
    result["backup"] = chosen
    exists = b.pg.database_exists()
    current = b.marker() if exists else None
    result["restored_from"] = current
    if exists and current and current["checksum"] == chosen["checksum"] and not p["force"]:
        result["removed"] = []
        return
    result["changed"] = True
    result["diff"] = dict(
        before="restored_from: %s\n"
        % (("%s sha256=%s" % (current["timestamp"], current["checksum"])) if current else "none"),
        after="restored_from: %s sha256=%s\n" % (chosen["timestamp"], chosen["checksum"]),
    )
    if module.check_mode:
        stamp = pg_files.format_timestamp(pg_files.utcnow())
        result["safety_backup"] = (
            dict(
                timestamp=stamp,
                path=os.path.join(b.safety_dir, pg_files.backup_filename(b.database, stamp)),
            )
            if exists
            else None
        )
        result["removed"] = []
        return
    result["safety_backup"] = b.dump(b.safety_dir) if exists else None
    if exists:
        b.pg.execute("DROP DATABASE %s WITH (FORCE)" % quote_ident(b.database), database="postgres")
    rc, out, err = b.pg.run(
        [
            b.pg.tool("pg_restore"),
            "--create",
            "--exit-on-error",
            "-p",
            str(b.pg.port),
            "-d",
            "postgres",
            chosen["path"],
        ],
        check=False,
    )
    if rc != 0:
        module.fail_json(
            msg="pg_restore of %s failed: %s. "
            "The database as it was before is in the safety backup %s"
            % (
                chosen["path"],
                (err or out).strip()[-2000:],
                result["safety_backup"]["path"]
                if result["safety_backup"]
                else "(none: it did not exist)",
            ),
            safety_backup=result["safety_backup"],
        )
    b.pg.execute(
        "COMMENT ON DATABASE %s IS %s"
        % (
            quote_ident(b.database),
            quote_literal(pg_files.restore_marker(chosen["timestamp"], chosen["checksum"])),
        ),
        database="postgres",
    )
    b.pg.execute("ANALYZE")
    result["restored_from"] = dict(timestamp=chosen["timestamp"], checksum=chosen["checksum"])
    result["row_counts"] = b.row_counts()
    _backups, safety = b.listing()
    result["removed"] = b.expired(safety)
    b.remove(result["removed"])


def main():
    argument_spec = postgres_local_argument_spec()
    argument_spec.update(
        state=dict(type="str", default="present", choices=["present", "restored"]),
        backup_dir=dict(type="path", default="/var/backups/ffmpeg-api/postgresql"),
        timestamp=dict(type="str"),
        min_interval=dict(type="int", default=0),
        retention_count=dict(type="int", default=0),
        retention_days=dict(type="int"),
        force=dict(type="bool", default=False),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    p = module.params
    for name in ("min_interval", "retention_count", "retention_days"):
        if p[name] is not None and p[name] < 0:
            module.fail_json(msg="%s must not be negative" % name)
    b = Backups(module)
    result = dict(changed=False)
    if p["state"] == "present":
        present(module, b, result)
    elif p["state"] == "restored":
        restored(module, b, result)
    result.setdefault("restored_from", None)
    backups, safety = b.listing()
    result["backups"] = backups
    result["safety_backups"] = safety
    module.exit_json(**result)


if __name__ == "__main__":
    main()
