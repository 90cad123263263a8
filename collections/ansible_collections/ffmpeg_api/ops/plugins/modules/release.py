#!/usr/bin/python
# Copyright: FFmpeg API Ops team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: release
short_description: Show the service's releases, roll back to the previous one, or pin one
version_added: 1.0.0
description:
  - The C(app) role installs each release into C(<app_root>/releases/<id>), points
    C(<app_root>/current) at it and writes the release it replaced into C(<app_root>/previous).
  - Without C(target) it only reports them; C(target=previous) points C(current) at the release
    named in C(previous) (a rollback is one link switch); C(target=<release id>) pins that release.
  - The link is switched atomically (a new symlink renamed over the old one). The release it
    replaced is written to C(<app_root>/rolled-back-from), so a rollback run twice does not roll
    forward again. Restarting the API and workers onto the switched release is the caller's job
    (C(changed) says whether it is needed).
  - Migrations only add to the schema, so an older release runs against a newer database.
options:
  app_root:
    description: Installation root of the service (the C(app) role's C(app_root)).
    type: path
    default: /opt/ffmpeg-api
  target:
    description:
      - C(previous) to roll back, or a release id to make current, e.g. C(0.1.0-638fe33dbc5f).
      - Omitted, the module changes nothing and reports the releases.
    type: str
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  platform:
    platforms: posix
  check_mode:
    support: full
  diff_mode:
    support: full
  idempotent:
    support: full
    description: A rollback or pin that is already in place reports no change.
author:
  - FFmpeg API Ops team (@ffmpeg-api-ops)
"""

EXAMPLES = r"""
- name: Roll back to the previous release
  ffmpeg_api.ops.release:
    target: previous
  register: rollback

- name: Return to a given release
  ffmpeg_api.ops.release:
    target: 0.1.0-638fe33dbc5f

- name: Which releases are installed
  ffmpeg_api.ops.release:
  register: releases
"""

RETURN = r"""
current:
  description: Release id the C(current) link points to after the call.
  returned: always
  type: str
  sample: 0.1.0-90b6c7563957
previous:
  description: Release id recorded as previous (the rollback target).
  returned: always
  type: str
replaced:
  description: Release id that was current before the call.
  returned: always
  type: str
releases:
  description: Installed release ids, oldest first.
  returned: always
  type: list
  elements: str
"""

import os

from ansible.module_utils.basic import AnsibleModule


def _release_id(path):
    return os.path.basename(path.rstrip("/")) if path else ""


def _read(path):
    try:
        with open(path) as fh:
            return fh.read().strip()
    except (IOError, OSError):
        return ""


def _write(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(text + "\n")
    os.rename(tmp, path)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            app_root=dict(type="path", default="/opt/ffmpeg-api"),
            target=dict(type="str"),
        ),
        supports_check_mode=True,
    )
    root = module.params["app_root"]
    wanted = module.params["target"]
    releases_dir = os.path.join(root, "releases")
    link = os.path.join(root, "current")
    if not os.path.islink(link):
        module.fail_json(msg="%s is not a symlink: the service is not installed here" % link)
    releases = []
    if os.path.isdir(releases_dir):
        entries = [os.path.join(releases_dir, n) for n in os.listdir(releases_dir)]
        releases = [
            os.path.basename(p)
            for p in sorted(filter(os.path.isdir, entries), key=os.path.getmtime)
        ]
    current = _release_id(os.readlink(link))
    previous = _release_id(_read(os.path.join(root, "previous")))
    result = dict(
        changed=False, current=current, previous=previous, replaced=current, releases=releases
    )

    if not wanted:
        module.exit_json(**result)
    target = previous if wanted == "previous" else wanted
    if not target:
        module.fail_json(
            msg="no previous release is recorded in %s/previous: nothing to roll back to" % root,
            **result,
        )
    if target not in releases:
        module.fail_json(
            msg="release %s is not installed under %s (installed: %s)"
            % (target, releases_dir, ", ".join(releases) or "none"),
            **result,
        )
    if target == current:
        module.exit_json(**result)

    result.update(changed=True, current=target)
    if module._diff:
        result["diff"] = dict(
            before="current -> %s\n" % current,
            after="current -> %s\n" % target,
            before_header=link,
            after_header=link,
        )
    if not module.check_mode:
        tmp_link = link + ".rollback-tmp"
        if os.path.lexists(tmp_link):
            os.unlink(tmp_link)
        os.symlink(os.path.join(releases_dir, target), tmp_link)
        os.rename(tmp_link, link)
        _write(os.path.join(root, "rolled-back-from"), os.path.join(releases_dir, current))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
