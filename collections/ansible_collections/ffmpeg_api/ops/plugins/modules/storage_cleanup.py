#!/usr/bin/python
# Copyright: FFmpeg API Ops team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: storage_cleanup
short_description: Remove old temporary files and orphaned job outputs from the storage root
description:
  - Runs C(ffmpeg-api storage cleanup) on the managed host. The service decides what is garbage
    against its jobs table; this module never decides it again.
  - With O(tmp_older_than), entries of tmp/ untouched for that long go, except the work
    directories of jobs still processing.
  - With O(orphans=true), output/ entries whose job is gone, failed or cancelled go; outputs of
    completed jobs are never touched (archive them with M(ffmpeg_api.ops.storage_archive)).
    Records of uploads whose file is gone (removed by hand) are dropped too, so they stop
    counting against their user's storage quota.
  - With the service's s3 storage backend the same rules apply to the bucket, 1,000 keys per
    listing and per delete; O(tmp_older_than) also aborts the multipart uploads begun before
    then (except under a processing job's tmp/ entry) and removes old entries of this host's
    scratch directory (C(WORK_DIR)) by the tmp/ rule.
  - In check mode the CLI runs with C(--dry-run) and reports what it would remove.
  - Whether anything changed is the CLI's C(changed), passed on as it is.
version_added: "1.0.0"
author:
  - FFmpeg API Ops team (@ffmpeg-api-ops)
extends_documentation_fragment:
  - ffmpeg_api.ops.service
options:
  tmp_older_than:
    description: Age of the tmp/ entries to remove, as C(90m), C(24h) or C(7d).
    type: str
  orphans:
    description: Also remove orphaned job outputs and the records of uploads whose file is gone.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    description: Runs the CLI with C(--dry-run); reports what would be removed and removes nothing.
  diff_mode:
    support: full
    description: Lists the removed entries as lines before that are gone after.
  idempotent:
    support: full
    description: Once removed, nothing is left to remove; a second run reports no change.
"""

EXAMPLES = r"""
- name: Remove temp files older than a day and orphaned outputs
  ffmpeg_api.ops.storage_cleanup:
    tmp_older_than: 24h
    orphans: true
  register: cleanup
"""

RETURN = r"""
removed_tmp:
  description: Entries of tmp/ removed (or that would be), relative to the storage root.
  returned: always
  type: list
  elements: str
removed_orphans:
  description: Orphaned output entries removed (or that would be), relative to the storage root.
  returned: always
  type: list
  elements: str
removed_upload_records:
  description: Upload records dropped (or that would be) because their file is gone.
  returned: always
  type: list
  elements: str
removed_scratch:
  description: Entries of the scratch directory removed (absolute paths; s3 backend only).
  returned: always
  type: list
  elements: str
aborted_uploads:
  description: Keys of the stale multipart uploads aborted (s3 backend only).
  returned: always
  type: list
  elements: str
objects_removed:
  description: Objects deleted from the bucket (s3 backend; 0 with local storage).
  returned: always
  type: int
backend:
  description: The storage backend cleaned, C(local) or C(s3).
  returned: always
  type: str
bytes_freed:
  description: Bytes freed (or that would be freed).
  returned: always
  type: int
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.ffmpeg_api.ops.plugins.module_utils.service_cli import (
    ServiceCLI,
    service_cli_argument_spec,
)


def main():
    spec = service_cli_argument_spec()
    spec.update(tmp_older_than=dict(type="str"), orphans=dict(type="bool", default=False))
    module = AnsibleModule(
        argument_spec=spec,
        supports_check_mode=True,
    )
    p = module.params
    if not p["tmp_older_than"] and not p["orphans"]:
        module.fail_json(msg="say what to clean: tmp_older_than and/or orphans=true")
    args = ["storage", "cleanup"]
    if p["tmp_older_than"]:
        args += ["--tmp-older-than", p["tmp_older_than"]]
    if p["orphans"]:
        args.append("--orphans")
    out = ServiceCLI(module).run(*args, dry_run=module.check_mode)
    removed = (
        out.get("removed_tmp", [])
        + out.get("removed_scratch", [])
        + out.get("aborted_uploads", [])
        + out.get("removed_orphans", [])
    )
    result = dict(
        changed=bool(out.get("changed")),
        removed_tmp=out.get("removed_tmp", []),
        removed_scratch=out.get("removed_scratch", []),
        aborted_uploads=out.get("aborted_uploads", []),
        removed_orphans=out.get("removed_orphans", []),
        removed_upload_records=out.get("removed_upload_records", []),
        objects_removed=out.get("objects_removed", 0),
        backend=out.get("backend", "local"),
        bytes_freed=out.get("bytes_freed", 0),
    )
    if module._diff:
        result["diff"] = dict(
            before="".join(path + "\n" for path in sorted(removed)),
            after="",
            before_header="storage entries removed",
        )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
