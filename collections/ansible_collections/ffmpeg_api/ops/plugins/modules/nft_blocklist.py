#!/usr/bin/python
# Copyright: FFmpeg API Ops team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: nft_blocklist
short_description: Block or unblock IPv4 addresses and networks with an nftables set
description:
  - Keeps an nftables table holding one set of IPv4 addresses and networks and an input-chain
    rule that drops every packet whose source is in the set (the DDoS runbook's
    C(iptables -A INPUT -s IP -j DROP), as one set instead of one rule per address).
  - Reads the table once with C(nft -j list table), adds or removes only the difference, and
    applies the whole change (table, set, chain, rule and elements) as one C(nft -f) transaction,
    so blocking 10,000 addresses is one atomic call.
  - Elements may carry an expiry (O(timeout)); nftables removes them by itself when it ends.
version_added: "1.0.0"
author:
  - FFmpeg API Ops team (@ffmpeg-api-ops)
options:
  addresses:
    description:
      - IPv4 addresses or networks in CIDR notation (C(203.0.113.7), C(198.51.100.0/24)).
      - With O(state=present) they are added (overlapping entries are merged first); an address
        already covered by a network in the set counts as blocked.
      - With O(state=absent) the entries equal to them are removed.
    type: list
    elements: str
    default: []
  state:
    description: Whether the addresses must be in the set (blocked) or not (unblocked).
    type: str
    choices: [present, absent]
    default: present
  timeout:
    description:
      - Expiry of the elements this run adds, in nftables' notation (C(30m), C(1h), C(2d)).
      - Elements already in the set keep the expiry they had.
    type: str
  table:
    description: The nftables table (family C(inet)) this module owns.
    type: str
    default: ffmpeg_api_blocklist
  set_name:
    description: The set in O(table) holding the blocked addresses.
    type: str
    default: blocked_ipv4
  priority:
    description: Priority of the table's input hook; lower runs earlier.
    type: int
    default: -10
  netns:
    description:
      - Run C(nft) inside this network namespace (C(ip netns exec NETNS nft ...)) instead of the
        host's own. Tests and benchmarks always use one.
    type: str
attributes:
  check_mode:
    support: full
    description: Reads the set and reports the entries it would add or remove; changes nothing.
  diff_mode:
    support: full
    description: Shows the set's entries before and after, one per line.
  idempotent:
    support: full
    description: Only the difference between the set and O(addresses) is applied.
requirements:
  - nftables (the C(nft) command) on the managed host.
notes:
  - IPv6 addresses are refused with a readable message; the set holds IPv4 only.
seealso:
  - module: ffmpeg_api.ops.haproxy_top_clients
"""

EXAMPLES = r"""
- name: Block two attackers for an hour
  ffmpeg_api.ops.nft_blocklist:
    addresses: [203.0.113.7, 198.51.100.0/24]
    timeout: 1h

- name: Unblock an address blocked by mistake
  ffmpeg_api.ops.nft_blocklist:
    addresses: [203.0.113.7]
    state: absent

- name: Block inside a test network namespace
  ffmpeg_api.ops.nft_blocklist:
    addresses: "{{ top_clients.over_threshold | map(attribute='address') | list }}"
    netns: fw-test
"""

RETURN = r"""
added:
  description: Entries this run added (or would add in check mode).
  returned: always
  type: list
  elements: str
  sample: [203.0.113.7, 198.51.100.0/24]
removed:
  description: Entries this run removed (or would remove in check mode).
  returned: always
  type: list
  elements: str
  sample: []
created:
  description: Whether the table, set, chain or rule had to be created.
  returned: always
  type: bool
  sample: false
blocked:
  description: Number of entries in the set after the run.
  returned: always
  type: int
  sample: 2
"""

import ipaddress
import json

from ansible.module_utils.basic import AnsibleModule

RULE_COMMENT = "ffmpeg-api blocklist"


def normalize(entries):
    """Sorted, merged IPv4 networks from address/CIDR strings; ValueError on bad input."""
    nets = []
    for entry in entries:
        text = str(entry).strip()
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise ValueError("%r is not an IPv4 address or network" % text)
        if net.version != 4:
            raise ValueError("%r is IPv6; the blocklist holds IPv4 only" % text)
        nets.append(net)
    return list(ipaddress.collapse_addresses(nets))


def net_text(net):
    return str(net.network_address) if net.prefixlen == 32 else str(net)


def _element_networks(elem):
    """Networks of one element of `nft -j` output (plain, prefix, range, or with timeout)."""
    if isinstance(elem, dict) and "elem" in elem:
        elem = elem["elem"].get("val")
    if isinstance(elem, str):
        return [ipaddress.ip_network(elem)]
    if isinstance(elem, dict) and "prefix" in elem:
        return [ipaddress.ip_network("%s/%s" % (elem["prefix"]["addr"], elem["prefix"]["len"]))]
    if isinstance(elem, dict) and "range" in elem:
        low, high = (ipaddress.ip_address(a) for a in elem["range"])
        return list(ipaddress.summarize_address_range(low, high))
    return []


def parse_table(document, set_name):
    """(set present, rule present, current networks, {network: (timeout, expires)}).

    From `nft -j list table` output; the last item holds the expiry of elements that have one.
    """
    has_set = has_rule = False
    current = []
    expiry = {}
    for item in document.get("nftables", []):
        if "set" in item and item["set"].get("name") == set_name:
            has_set = True
            for elem in item["set"].get("elem", []):
                nets = _element_networks(elem)
                current.extend(nets)
                if isinstance(elem, dict) and "elem" in elem and elem["elem"].get("timeout"):
                    for n in nets:
                        expiry[n] = (elem["elem"]["timeout"], elem["elem"].get("expires"))
        if "rule" in item and item["rule"].get("comment") == RULE_COMMENT:
            has_rule = True
    return has_set, has_rule, sorted(set(current)), expiry


def plan(current, wanted, state):
    """(to_add, to_remove) networks turning `current` into the wanted state."""
    current_set = set(current)
    if state == "present":
        # Covered when one of its supernets (at a prefix length the set uses) is in the set:
        # a hash lookup per prefix length instead of a scan of the set per address.
        lengths = sorted(set(c.prefixlen for c in current))
        to_add = [
            n
            for n in wanted
            if not any(
                p <= n.prefixlen and n.supernet(new_prefix=p) in current_set for p in lengths
            )
        ]
        return to_add, []
    return [], [n for n in wanted if n in current_set]


# nftables 1.0 deletes elements of an interval set slowly (about 1 ms each); past this many
# removals the set is flushed and refilled instead, in the same transaction.
REBUILD_OVER = 100


def _element(net, timeout=None, expires=None):
    text = net_text(net)
    if timeout:
        text += " timeout %s" % (timeout if isinstance(timeout, str) else "%ds" % timeout)
        if expires:
            text += " expires %ds" % expires
    return text


def build_script(
    table, set_name, priority, create, to_add, to_remove, timeout, current=(), expiry=None
):
    """The one `nft -f` transaction: the objects when missing, then the element changes."""
    lines = []
    if create:
        lines += [
            "add table inet %s" % table,
            "add set inet %s %s { type ipv4_addr; flags interval, timeout; }" % (table, set_name),
            "add chain inet %s input { type filter hook input priority %d; policy accept; }"
            % (table, priority),
            # Recreated with the chain so that exactly one drop rule exists.
            "flush chain inet %s input" % table,
            'add rule inet %s input ip saddr @%s drop comment "%s"'
            % (table, set_name, RULE_COMMENT),
        ]
    if len(to_remove) > REBUILD_OVER:
        expiry = expiry or {}
        removed = set(to_remove)
        keep = [_element(n, *expiry.get(n, (None, None))) for n in current if n not in removed]
        keep += [_element(n, timeout) for n in to_add]
        lines.append("flush set inet %s %s" % (table, set_name))
        if keep:
            lines.append("add element inet %s %s { %s }" % (table, set_name, ", ".join(keep)))
        return "\n".join(lines) + "\n"
    if to_add:
        lines.append(
            "add element inet %s %s { %s }"
            % (table, set_name, ", ".join(_element(n, timeout) for n in to_add))
        )
    if to_remove:
        lines.append(
            "delete element inet %s %s { %s }"
            % (table, set_name, ", ".join(net_text(n) for n in to_remove))
        )
    return "\n".join(lines) + "\n"


def main():
    module = AnsibleModule(
        argument_spec=dict(
            addresses=dict(type="list", elements="str", default=[]),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            timeout=dict(type="str"),
            table=dict(type="str", default="ffmpeg_api_blocklist"),
            set_name=dict(type="str", default="blocked_ipv4"),
            priority=dict(type="int", default=-10),
            netns=dict(type="str"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    nft = module.get_bin_path("nft", required=True)
    prefix = (
        [module.get_bin_path("ip", required=True), "netns", "exec", p["netns"]]
        if p["netns"]
        else []
    )
    try:
        wanted = normalize(p["addresses"])
    except ValueError as exc:
        module.fail_json(msg=str(exc))

    rc, out, err = module.run_command(prefix + [nft, "-j", "list", "table", "inet", p["table"]])
    if rc == 0:
        has_set, has_rule, current, expiry = parse_table(json.loads(out), p["set_name"])
    elif "No such file or directory" in err:
        has_set, has_rule, current, expiry = False, False, [], {}
    else:
        module.fail_json(
            msg="nft could not read table inet %s: %s" % (p["table"], err.strip()), rc=rc
        )

    create = p["state"] == "present" and not (has_set and has_rule)
    to_add, to_remove = plan(current, wanted, p["state"])
    after = sorted((set(current) | set(to_add)) - set(to_remove))
    changed = bool(create or to_add or to_remove)
    result = dict(
        changed=changed,
        added=[net_text(n) for n in to_add],
        removed=[net_text(n) for n in to_remove],
        created=create,
        blocked=len(after),
    )
    if module._diff:
        result["diff"] = dict(
            before="".join(net_text(n) + "\n" for n in current),
            after="".join(net_text(n) + "\n" for n in after),
            before_header="inet %s @%s" % (p["table"], p["set_name"]),
            after_header="inet %s @%s" % (p["table"], p["set_name"]),
        )
    if changed and not module.check_mode:
        script = build_script(
            p["table"],
            p["set_name"],
            p["priority"],
            create,
            to_add,
            to_remove,
            p["timeout"],
            current=current,
            expiry=expiry,
        )
        rc, out, err = module.run_command(prefix + [nft, "-f", "-"], data=script, binary_data=True)
        if rc != 0:
            module.fail_json(msg="nft rejected the change: %s" % err.strip(), rc=rc)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
