#!/usr/bin/python
# Copyright: FFmpeg API Ops team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: api_key
short_description: Identify, audit, revoke, flag and rotate FFmpeg API keys
version_added: 1.0.0
description:
  - The steps of the runbook's "Suspected API Key Compromise" procedure, on the service's own
    key store (keys are C(fk_<id>_<secret>); only a hash is stored; the id is public).
  - I(list_keys) identifies keys by recent usage; I(key_id) with nothing else audits one key
    (requests, last use, jobs and output bytes in the last 24 hours); I(state=revoked) revokes
    it (it answers 401 from the next request on); I(monitored) flags it so its requests are
    marked C(monitored) in the access log; I(rotate_user) replaces a user's keys.
  - Several of these may be combined in one task; they run in that order.
  - Wraps C(ffmpeg-api keys list|usage|revoke|monitor|rotate-user).
options:
  list_keys:
    description: >-
      Return the keys matching I(used_within), I(user) and I(active_only), sorted by I(sort).
    type: bool
    default: false
  used_within:
    description: With I(list_keys), only keys used within this long (C(1h), C(30m)).
    type: str
  user:
    description: With I(list_keys), only this user's keys.
    type: str
  sort:
    description: >-
      With I(list_keys), the order (C(recent) = last used first, C(requests) = most used first).
    type: str
    choices: [recent, requests, created]
    default: recent
  active_only:
    description: With I(list_keys), leave revoked keys out.
    type: bool
    default: false
  key_id:
    description:
      - The public id of one key (the part after C(fk_)). Its usage audit is always returned.
    type: str
  state:
    description:
      - C(revoked) revokes I(key_id). A revoked key cannot be brought back; issue a new one.
      - Unset, the key's state is left as it is.
    type: str
    choices: [revoked]
  reason:
    description: Why the key is revoked (stored with it).
    type: str
    default: ""
  monitored:
    description: >-
      Flag (or unflag) I(key_id) so each of its requests is marked C(monitored) in the access log.
    type: bool
  rotate_user:
    description:
      - Revoke the active keys of this user and issue a replacement for each (same name and
        rights). Requires I(rotate_issued_before).
    type: str
  rotate_issued_before:
    description:
      - Only keys issued before this moment (ISO 8601, e.g. C(2026-11-29T10:00:00Z)) are
        replaced. The replacements are issued after it, so a second run with the same value
        finds nothing to replace and reports no change.
      - A stable choice is the moment the compromise was discovered, or the C(revoked_at) of the
        compromised key, which the M(ffmpeg_api.ops.api_key) revoke step returns.
    type: str
  new_keys_file:
    description:
      - Also write the replacement keys (one C(<id> <name> <raw key>) line each) to this file on
        the managed host, mode C(0600), to hand them to the user. Only written when keys are
        issued.
    type: path
extends_documentation_fragment:
  - ffmpeg_api.ops.service
attributes:
  check_mode:
    support: full
    description: >-
      Runs the changing commands with C(--dry-run); reports the keys that would be revoked, flagged
      or replaced.
  diff_mode:
    support: full
    description: >-
      Shows the key's state and monitoring flag, and the user's replaced keys, before and after.
  idempotent:
    support: full
    description:
      - Revoking a revoked key or flagging a flagged key reports no change.
      - Rotation is idempotent only through I(rotate_issued_before) (required for that reason);
        every rotation without it would issue new keys again.
notes:
  - "The return value I(new_keys) holds the new raw keys, which are secrets shown once. Register
    the task with C(no_log: true) (or use I(new_keys_file)), or they appear in the output and
    in any log of the run."
author:
  - FFmpeg API Ops team (@ffmpeg-api-ops)
"""

EXAMPLES = r"""
- name: Keys used in the last hour, most requests first
  ffmpeg_api.ops.api_key:
    list_keys: true
    used_within: 1h
    sort: requests
  register: recent

- name: Revoke the compromised key, flag it and audit it
  ffmpeg_api.ops.api_key:
    key_id: h2x9q0c1m3zt
    state: revoked
    reason: leaked in a public repository
    monitored: true
  register: compromised

- name: Replace the user's other keys issued before the revocation
  ffmpeg_api.ops.api_key:
    rotate_user: "{{ compromised.key.user_id }}"
    rotate_issued_before: "{{ compromised.key.revoked_at }}"
    new_keys_file: /root/new-keys-{{ compromised.key.user_id }}.txt
  no_log: true
"""

RETURN = r"""
keys:
  description: With I(list_keys), the matching keys (no secrets).
  returned: when list_keys is true
  type: list
  elements: dict
  sample:
    - {id: h2x9q0c1m3zt, user_id: alice, name: laptop, active: true, request_count: 5120,
       last_used_at: "2026-11-29T10:02:11+00:00"}
key:
  description: The key I(key_id) after the task (what it would be, in check mode).
  returned: when key_id is set
  type: dict
  sample:
    {id: h2x9q0c1m3zt, user_id: alice, active: false, monitored: true,
     revoked_at: "2026-11-29T10:05:00+00:00"}
usage:
  description: Usage audit of I(key_id) (read before any change).
  returned: when key_id is set
  type: dict
  contains:
    request_count:
      description: Requests made with the key, ever.
      type: int
    last_used_at:
      description: Last request with the key.
      type: str
    jobs_24h:
      description: Jobs submitted with the key in the last 24 hours.
      type: int
    output_bytes_24h:
      description: Output bytes those jobs produced (what could have been taken).
      type: int
    failed_jobs_24h:
      description: Of those jobs, how many failed.
      type: int
rotated:
  description: Ids of the keys of I(rotate_user) that were (would be) revoked and replaced.
  returned: when rotate_user is set
  type: list
  elements: str
new_keys:
  description:
    - The replacement keys, each with C(id), C(name), C(replaces) and the raw C(key).
    - "B(Secret): the raw keys are shown only here. Run the task with C(no_log: true)."
  returned: when rotate_user is set
  type: list
  elements: dict
  sample: [{id: 0q1w2e3r4t5y, name: laptop, replaces: a1s2d3f4g5h6, key: "fk_0q1w2e3r4t5y_..."}]
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.ffmpeg_api.ops.plugins.module_utils.service_cli import (
    ServiceCLI,
    service_cli_argument_spec,
)

KEY_VIEW = ("active", "monitored")


def key_view(key):
    """The part of a key's state this module changes, for diffs."""
    return dict(active=bool(key.get("active")), monitored=bool(key.get("monitored")))


def new_keys_lines(created):
    return "".join("%s %s %s\n" % (k["id"], k["name"], k["key"]) for k in created)


def main():
    argument_spec = service_cli_argument_spec()
    argument_spec.update(
        list_keys=dict(type="bool", default=False),
        used_within=dict(type="str"),
        user=dict(type="str"),
        sort=dict(type="str", default="recent", choices=["recent", "requests", "created"]),
        active_only=dict(type="bool", default=False),
        key_id=dict(type="str"),
        state=dict(type="str", choices=["revoked"]),
        reason=dict(type="str", default=""),
        monitored=dict(type="bool"),
        rotate_user=dict(type="str"),
        rotate_issued_before=dict(type="str"),
        new_keys_file=dict(type="path"),
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        required_by=dict(
            state=("key_id",),
            monitored=("key_id",),
            rotate_user=("rotate_issued_before",),
            new_keys_file=("rotate_user",),
        ),
        required_one_of=[("list_keys", "key_id", "rotate_user")],
        supports_check_mode=True,
    )
    p = module.params
    check = module.check_mode
    cli = ServiceCLI(module)
    result = dict(changed=False)
    before, after = {}, {}

    if p["list_keys"]:
        listed = cli.run(
            "keys",
            "list",
            "--sort",
            p["sort"],
            "--user" if p["user"] else None,
            p["user"],
            "--used-within" if p["used_within"] else None,
            p["used_within"],
            "--active-only" if p["active_only"] else None,
        )
        result["keys"] = listed["keys"]

    if p["key_id"]:
        usage = cli.run("keys", "usage", p["key_id"])
        result["usage"] = usage
        key = dict((k, v) for k, v in usage.items() if not k.endswith("_24h"))
        start = key_view(key)
        if p["state"] == "revoked":
            out = cli.run("keys", "revoke", p["key_id"], "--reason", p["reason"], dry_run=check)
            if out["changed"]:
                result["changed"] = True
                key = out["key"] if not check else dict(key, active=False)
        if p["monitored"] is not None:
            out = cli.run(
                "keys",
                "monitor",
                p["key_id"],
                "--off" if not p["monitored"] else None,
                dry_run=check,
            )
            if out["changed"]:
                result["changed"] = True
                key = dict(key, **out["key"]) if not check else dict(key, monitored=p["monitored"])
        result["key"] = key
        if key_view(key) != start:
            before["key " + p["key_id"]] = start
            after["key " + p["key_id"]] = key_view(key)

    if p["rotate_user"]:
        out = cli.run(
            "keys",
            "rotate-user",
            p["rotate_user"],
            "--created-before",
            p["rotate_issued_before"],
            dry_run=check,
        )
        rotated = [k["id"] for k in out.get("revoked", [])]
        created = out.get("created", [])
        result["rotated"] = rotated
        result["new_keys"] = [
            dict(id=k["id"], name=k["name"], replaces=k.get("replaces"), key=k["key"])
            for k in created
        ]
        if out["changed"]:
            result["changed"] = True
            before["keys of " + p["rotate_user"]] = sorted(rotated)
            after["keys of " + p["rotate_user"]] = (
                sorted(k["id"] for k in created) if not check else ["(%d new keys)" % len(rotated)]
            )
        if created and p["new_keys_file"]:
            path = p["new_keys_file"]
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(new_keys_lines(created))
            os.chmod(path, 0o600)

    if before:
        result["diff"] = dict(before=before, after=after)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
