#!/usr/bin/python
# Copyright: FFmpeg API Ops team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: storage_info
short_description: Disk usage of the service's storage root and its largest entries
description:
  - Runs C(ffmpeg-api storage usage) on the managed host and returns its figures, the disk's
    total, used and free bytes, whether tmp/ is writable, the size of uploads/, output/ and tmp/,
    and the largest entries (the Storage Full runbook's C(df -h) and C(du -sh * | sort -hr)).
  - With the service's s3 storage backend the areas and the largest entries are the bucket's
    (C(uploads/<uuid>), C(output/<job>), C(tmp/<job>.<attempt>) under C(S3_PREFIX), from one
    listing), and the disk figures are those of this host's scratch directory (C(WORK_DIR)), the
    local disk that fills then.
  - Read-only.
version_added: "1.0.0"
author:
  - FFmpeg API Ops team (@ffmpeg-api-ops)
extends_documentation_fragment:
  - ffmpeg_api.ops.service
options:
  top:
    description: How many of the largest entries to return.
    type: int
    default: 20
attributes:
  check_mode:
    support: full
    description: The module only reads; check mode runs it in full.
  diff_mode:
    support: none
    description: Nothing changes, so there is no diff.
  idempotent:
    support: full
    description: The module only reads.
"""

EXAMPLES = r"""
- name: Measure the storage root
  ffmpeg_api.ops.storage_info:
    top: 10
  register: storage

- name: Show the free space
  ansible.builtin.debug:
    msg: "{{ storage.usage.free_percent }} % free"
"""

RETURN = r"""
usage:
  description: The CLI's usage document.
  returned: always
  type: dict
  contains:
    backend: {description: "The storage backend, C(local) or C(s3).", type: str}
    total_bytes:
      description: Size of the disk holding the storage root (s3, the scratch directory).
      type: int
    used_bytes: {description: Bytes used on that disk., type: int}
    free_bytes: {description: Bytes free on that disk., type: int}
    free_percent: {description: Free share in percent., type: float}
    writable: {description: "Whether tmp/ (s3 - the scratch directory) is writable.", type: bool}
    areas:
      description:
        - Bytes and files of uploads, output and tmp; with s3, of the bucket, with C(objects)
          (C(files) is the same count).
      type: dict
    top:
      description: Largest entries (path relative to the root or the prefix, and bytes).
      type: list
    bucket: {description: The bucket (s3 only)., type: str, returned: with the s3 backend}
    prefix: {description: The key prefix (s3 only)., type: str, returned: with the s3 backend}
    scratch_dir:
      description: This host's scratch directory (s3 only).
      type: str
      returned: with the s3 backend
    scratch:
      description: Bytes and files in the scratch directory (s3 only).
      type: dict
      returned: with the s3 backend
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.ffmpeg_api.ops.plugins.module_utils.service_cli import (
    ServiceCLI,
    service_cli_argument_spec,
)


def main():
    spec = service_cli_argument_spec()
    spec.update(top=dict(type="int", default=20))
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    usage = ServiceCLI(module).run("storage", "usage", "--top", module.params["top"])
    module.exit_json(changed=False, usage=usage)


if __name__ == "__main__":
    main()
