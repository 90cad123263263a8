#!/usr/bin/python
# Copyright: FFmpeg API Ops team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: prometheus_web_config
short_description: Basic-auth users of a Prometheus web configuration file, hashed with bcrypt
version_added: 1.0.0
description:
  - Writes the C(--web.config.file) that Prometheus, Alertmanager and the exporters built on the
    Prometheus exporter toolkit read, with C(basic_auth_users) hashed with bcrypt.
  - A bcrypt hash has a random salt, so hashing the same password again gives a different file.
    The module keeps the hash already in the file for every user whose password still verifies
    against it, and hashes only new users and changed passwords, so an unchanged password leaves
    the file unchanged.
  - The file is JSON, which is YAML as well. Those programs read it again on every request, so a
    change needs no restart.
requirements:
  - bcrypt (Debian's python3-bcrypt) on the managed host
options:
  path:
    description: The web configuration file.
    type: path
    required: true
  users:
    description: User name to password (plain text; secret).
    type: dict
    required: true
  rounds:
    description: bcrypt cost of new hashes (each check of a password costs 2^rounds).
    type: int
    default: 10
extends_documentation_fragment:
  - ansible.builtin.files
  - ansible.builtin.action_common_attributes
attributes:
  platform:
    platforms: posix
  check_mode:
    support: full
  diff_mode:
    support: full
    details: The diff names the users added, re-hashed and removed, never a password or a hash.
  idempotent:
    support: full
    description: Users whose password still verifies against the file's hash report no change.
author:
  - FFmpeg API Ops team (@ffmpeg-api-ops)
"""

EXAMPLES = r"""
- name: Protect Prometheus with basic auth
  ffmpeg_api.ops.prometheus_web_config:
    path: /etc/prometheus/web.yml
    users:
      monitoring: "{{ monitoring_web_password }}"
    owner: root
    group: prometheus
    mode: "0640"
  no_log: true
"""

RETURN = r"""
path:
  description: The web configuration file.
  returned: always
  type: str
added:
  description: Users that were not in the file.
  returned: always
  type: list
  elements: str
rehashed:
  description: Users whose password no longer verified against the hash in the file.
  returned: always
  type: list
  elements: str
removed:
  description: Users of the file that are no longer wanted.
  returned: always
  type: list
  elements: str
"""

import json
import os
import tempfile
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    import bcrypt
except ImportError:
    bcrypt = None
    BCRYPT_IMPORT_ERROR = traceback.format_exc()
else:
    BCRYPT_IMPORT_ERROR = None


def current_users(text):
    """The basic_auth_users of a file this module wrote; {} for anything else (rewritten)."""
    try:
        document = json.loads(text)
    except ValueError:
        return {}
    users = document.get("basic_auth_users") if isinstance(document, dict) else None
    if not isinstance(users, dict):
        return {}
    return {str(k): v for k, v in users.items() if isinstance(v, str)}


def desired_users(users, current, verifies, new_hash):
    """(hashes, added, rehashed, removed): a hash per wanted user, the one of the file while
    its password verifies against it (verifies(password, hash)), else new_hash(password)."""
    hashes, added, rehashed = {}, [], []
    for name in sorted(users):
        password = users[name]
        old = current.get(name)
        if old is not None and verifies(password, old):
            hashes[name] = old
            continue
        hashes[name] = new_hash(password)
        (rehashed if old is not None else added).append(name)
    removed = sorted(set(current) - set(users))
    return hashes, added, rehashed, removed


def render(hashes):
    return json.dumps({"basic_auth_users": hashes}, indent=2, sort_keys=True) + "\n"


def _verifies(password, hashed):
    try:
        return bcrypt.checkpw(password.encode(), hashed.encode())
    except ValueError:  # not a bcrypt hash
        return False


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            users=dict(type="dict", required=True, no_log=True),
            rounds=dict(type="int", default=10),
        ),
        add_file_common_args=True,
        supports_check_mode=True,
    )
    if bcrypt is None:
        module.fail_json(msg=missing_required_lib("bcrypt"), exception=BCRYPT_IMPORT_ERROR)
    p = module.params
    path = p["path"]
    if not p["users"]:
        module.fail_json(msg="users must name at least one user")
    users = {}
    for name, password in p["users"].items():
        if not name or not isinstance(password, str) or not password:
            module.fail_json(msg="every user needs a non-empty name and password: %s" % name)
        users[name] = password

    before = ""
    if os.path.exists(path):
        with open(path, encoding="utf-8") as fh:
            before = fh.read()
    rounds = p["rounds"]
    hashes, added, rehashed, removed = desired_users(
        users,
        current_users(before),
        _verifies,
        lambda pw: bcrypt.hashpw(pw.encode(), bcrypt.gensalt(rounds)).decode(),
    )
    after = render(hashes)
    changed = after != before
    result = dict(path=path, added=added, rehashed=rehashed, removed=removed)
    result["diff"] = dict(
        before="users: %s\n" % ", ".join(sorted(current_users(before))),
        after="users: %s (added: %s; re-hashed: %s)\n"
        % (", ".join(sorted(hashes)), ", ".join(added) or "-", ", ".join(rehashed) or "-"),
    )
    if changed and not module.check_mode:
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".web-config.")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(after)
        module.atomic_move(tmp, path)
    file_args = module.load_file_common_arguments(p)
    if os.path.exists(path):
        changed = module.set_fs_attributes_if_different(file_args, changed)
    elif module.check_mode:
        changed = True
    module.exit_json(changed=changed, **result)


if __name__ == "__main__":
    main()
