#!/usr/bin/python
# Copyright: FFmpeg API Ops team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: pg_backup_info
short_description: List the service database's pg_dump backups and verify their checksums
description:
  - Lists the backups M(ffmpeg_api.ops.pg_backup) keeps in I(backup_dir) and the safety
    backups taken before restores, newest first, with size, recorded checksum and whether the
    file still matches it.
  - Reports which backup the database was last restored from (the restore marker), when the
    server answers.
version_added: "1.0.0"
author:
  - FFmpeg API Ops team (@ffmpeg-api-ops)
extends_documentation_fragment:
  - ffmpeg_api.ops.postgres_local
options:
  backup_dir:
    description: Directory of the backups (as given to M(ffmpeg_api.ops.pg_backup)).
    type: path
    default: /var/backups/ffmpeg-api/postgresql
  verify:
    description: Recompute every backup's SHA-256 (reads every file).
    type: bool
    default: true
attributes:
  check_mode:
    description:
      Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: Changes nothing in any mode.
  diff_mode:
    description:
      Will return details on what has changed (or possibly needs changing in check_mode), when in
      diff mode.
    support: none
  idempotent:
    description:
      When run twice in a row outside check mode with the same arguments, the second run reports
      no change.
    support: full
seealso:
  - module: ffmpeg_api.ops.pg_backup
"""

EXAMPLES = r"""
- name: List the backups of the service's database
  ffmpeg_api.ops.pg_backup_info:
  register: backups

- name: Refuse to go on when the latest backup is damaged
  ansible.builtin.assert:
    that: backups.backups[0].checksum_valid
"""

RETURN = r"""
backups:
  description: The backups, newest first.
  returned: always
  type: list
  elements: dict
  contains:
    timestamp:
      description:
        C(YYYYmmdd_HHMMSS) (UTC) the backup was taken; what I(timestamp) of a restore names.
      type: str
    path:
      description: The dump file.
      type: str
    size:
      description: Its size in bytes.
      type: int
    checksum:
      description: The SHA-256 recorded when it was taken (null without a checksum file).
      type: str
    checksum_valid:
      description: Whether the file still has that checksum (only with I(verify)).
      type: bool
safety_backups:
  description: Safety backups taken before restores, newest first (same fields).
  returned: always
  type: list
  elements: dict
restored_from:
  description:
    C(timestamp) and C(checksum) of the backup the database was last restored from, or null.
  returned: always
  type: dict
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.ffmpeg_api.ops.plugins.module_utils import pg_files
from ansible_collections.ffmpeg_api.ops.plugins.module_utils.pg_local import (
    PgLocal,
    postgres_local_argument_spec,
)


def main():
    argument_spec = postgres_local_argument_spec()
    argument_spec.update(
        backup_dir=dict(type="path", default="/var/backups/ffmpeg-api/postgresql"),
        verify=dict(type="bool", default=True),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    p = module.params
    pg = PgLocal(module)
    restored_from = None
    if pg.is_ready() and pg.database_exists():
        parsed = pg_files.parse_restore_marker(pg.database_comment())
        restored_from = dict(timestamp=parsed[0], checksum=parsed[1]) if parsed else None
    module.exit_json(
        changed=False,
        backups=pg_files.scan_backups(p["backup_dir"], p["database"], p["verify"]),
        safety_backups=pg_files.scan_backups(
            os.path.join(p["backup_dir"], "safety"), p["database"], p["verify"]
        ),
        restored_from=restored_from,
    )


if __name__ == "__main__":
    main()
