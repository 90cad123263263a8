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
    total_bytes: {description: Size of the disk holding the storage root., type: int}
    used_bytes: {description: Bytes used on that disk., type: int}
    free_bytes: {description: Bytes free on that disk., type: int}
    free_percent: {description: Free share in percent., type: float}
    writable: {description: Whether tmp/ is writable., type: bool}
    areas: {description: "Bytes and files of uploads, output and tmp.", type: dict}
    top: {description: Largest entries (path relative to the root and bytes)., type: list}
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
