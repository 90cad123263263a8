#!/usr/bin/python
# Copyright: FFmpeg API Ops team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: pg_maintenance
short_description: Diagnose and tune the service's PostgreSQL database
description:
  - Always reports the slowest statements by mean time from C(pg_stat_statements), the largest
    tables, connections to the database by state, and the slow-query logging threshold.
  - Sets the slow-query logging threshold (C(log_min_duration_statement)) with C(ALTER SYSTEM)
    and reloads the configuration, only when it differs.
  - Analyzes (and optionally vacuums) the tables that need it - those modified since their
    last analyze, or with dead rows - so that a second run finds nothing to do.
  - Rebuilds the indexes of the database's tables (C(REINDEX TABLE)), only the invalid ones or all
    of them.
version_added: "1.0.0"
author:
  - FFmpeg API Ops team (@ffmpeg-api-ops)
extends_documentation_fragment:
  - ffmpeg_api.ops.postgres_local
options:
  slow_query_threshold_ms:
    description:
      - Log statements running longer than this many milliseconds (C(-1) turns slow-query logging
        off, C(0) logs every statement). Unset leaves the setting alone.
    type: int
  analyze:
    description: ANALYZE the tables with rows modified since their last analyze (or never analyzed).
    type: bool
    default: false
  vacuum:
    description:
      VACUUM (ANALYZE) the tables that have dead rows, instead of a plain ANALYZE for them.
    type: bool
    default: false
  reindex:
    description:
      - C(none) rebuilds nothing; C(invalid) rebuilds the invalid indexes (left by a failed
        C(CREATE INDEX CONCURRENTLY)); C(all) rebuilds every index of the database's tables,
        which is a change on every run.
    type: str
    choices: [none, invalid, all]
    default: none
  schema:
    description: Schema of the service's tables.
    type: str
    default: public
  top:
    description: How many slow queries and tables to report.
    type: int
    default: 10
attributes:
  check_mode:
    description:
      Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: Reports the setting, tables and indexes it would change; changes nothing.
  diff_mode:
    description:
      Will return details on what has changed (or possibly needs changing in check_mode), when in
      diff mode.
    support: full
    details: The slow-query threshold before and after, and the tables analyzed or reindexed.
  idempotent:
    description:
      When run twice in a row outside check mode with the same arguments, the second run reports
      no change.
    support: partial
    details:
      The threshold and analyze/vacuum are idempotent; C(reindex=all) is a change on every run.
"""

EXAMPLES = r"""
- name: Diagnose - slowest queries, largest tables, connections
  ffmpeg_api.ops.pg_maintenance:
    top: 5
  register: db

- name: Log statements slower than a second; refresh planner statistics
  ffmpeg_api.ops.pg_maintenance:
    slow_query_threshold_ms: 1000
    analyze: true

- name: Rebuild every index of the service's tables
  ffmpeg_api.ops.pg_maintenance:
    reindex: all
"""

RETURN = r"""
slow_queries:
  description:
    The statements with the highest mean time (query, calls, mean_ms, max_ms, total_ms, rows).
  returned: always (empty when pg_stat_statements is not installed)
  type: list
  elements: dict
table_sizes:
  description:
    The largest tables of I(schema) with their total size (bytes and pretty), live and dead rows.
  returned: always
  type: list
  elements: dict
connections:
  description: Connections to the database by state (active, idle, idle in transaction, ...).
  returned: always
  type: dict
  sample: {"active": 1, "idle": 6}
max_connections:
  description: The server's C(max_connections).
  returned: always
  type: int
slow_query_threshold_ms:
  description: C(log_min_duration_statement) in milliseconds after the run (-1 = off).
  returned: always
  type: int
analyzed:
  description: Tables analyzed (or vacuumed and analyzed).
  returned: always
  type: list
  elements: str
reindexed:
  description: Tables or indexes rebuilt.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.ffmpeg_api.ops.plugins.module_utils import pg_files
from ansible_collections.ffmpeg_api.ops.plugins.module_utils.pg_local import (
    PgLocal,
    postgres_local_argument_spec,
    quote_ident,
    quote_literal,
)


def diagnose(pg, schema, top):
    database = quote_literal(pg.database)
    has_statements = pg.value(
        "SELECT count(*) AS n FROM pg_extension WHERE extname = 'pg_stat_statements'"
    )
    slow = []
    if has_statements:
        rows = pg.rows(
            "SELECT query, calls, mean_exec_time, max_exec_time, total_exec_time, rows "
            "FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid "
            "WHERE d.datname = %s AND s.calls > 0 ORDER BY mean_exec_time DESC LIMIT %d"
            % (database, top)
        )
        slow = pg_files.top_slow_queries(rows, top)
    sizes = pg.rows(
        "SELECT c.relname AS table, pg_total_relation_size(c.oid) AS bytes, "
        "pg_size_pretty(pg_total_relation_size(c.oid)) AS size, "
        "coalesce(s.n_live_tup, 0) AS live_rows, coalesce(s.n_dead_tup, 0) AS dead_rows "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid "
        "WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'm') "
        "ORDER BY pg_total_relation_size(c.oid) DESC LIMIT %d" % (quote_literal(schema), top)
    )
    connections = pg_files.connection_counts(
        pg.rows(
            "SELECT state, count(*) AS count FROM pg_stat_activity "
            "WHERE datname = %s GROUP BY state" % database
        )
    )
    max_connections = int(
        pg.value("SELECT setting AS s FROM pg_settings WHERE name = 'max_connections'")
    )
    return dict(
        slow_queries=slow,
        table_sizes=sizes,
        connections=connections,
        max_connections=max_connections,
    )


def threshold(pg):
    return int(
        pg.value("SELECT setting AS s FROM pg_settings WHERE name = 'log_min_duration_statement'")
    )


def main():
    argument_spec = postgres_local_argument_spec()
    argument_spec.update(
        slow_query_threshold_ms=dict(type="int"),
        analyze=dict(type="bool", default=False),
        vacuum=dict(type="bool", default=False),
        reindex=dict(type="str", default="none", choices=["none", "invalid", "all"]),
        schema=dict(type="str", default="public"),
        top=dict(type="int", default=10),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    p = module.params
    if p["slow_query_threshold_ms"] is not None and p["slow_query_threshold_ms"] < -1:
        module.fail_json(
            msg="slow_query_threshold_ms must be -1 (off), 0 (all) or a positive number of ms"
        )
    pg = PgLocal(module)
    if not pg.is_ready():
        module.fail_json(msg="PostgreSQL does not answer on port %s" % pg.port)
    schema = quote_literal(p["schema"])
    result = dict(changed=False, analyzed=[], reindexed=[])
    before, after = [], []

    current = threshold(pg)
    wanted = p["slow_query_threshold_ms"]
    if wanted is not None and wanted != current:
        result["changed"] = True
        before.append("log_min_duration_statement = %s" % current)
        after.append("log_min_duration_statement = %s" % wanted)
        if not module.check_mode:
            pg.execute("ALTER SYSTEM SET log_min_duration_statement = %d" % wanted)
            pg.execute("SELECT pg_reload_conf()")

    if p["analyze"] or p["vacuum"]:
        stale = pg.rows(
            "SELECT relname AS t, n_dead_tup AS dead FROM pg_stat_user_tables "
            "WHERE schemaname = %s "
            "AND (n_mod_since_analyze > 0 OR (last_analyze IS NULL AND last_autoanalyze IS NULL) "
            "OR (%s AND n_dead_tup > 0)) ORDER BY relname"
            % (schema, "true" if p["vacuum"] else "false")
        )
        for row in stale:
            table = "%s.%s" % (quote_ident(p["schema"]), quote_ident(row["t"]))
            vacuum = p["vacuum"] and row["dead"] > 0
            result["analyzed"].append(row["t"])
            after.append("%s %s" % ("vacuum analyze" if vacuum else "analyze", row["t"]))
            if not module.check_mode:
                pg.execute(("VACUUM (ANALYZE) %s" if vacuum else "ANALYZE %s") % table)
        result["changed"] = result["changed"] or bool(stale)

    if p["reindex"] != "none":
        if p["reindex"] == "all":
            targets = [
                r["t"]
                for r in pg.rows(
                    "SELECT DISTINCT tablename AS t FROM pg_indexes "
                    "WHERE schemaname = %s ORDER BY 1" % schema
                )
            ]
            statement = "REINDEX TABLE %s.%s"
        else:
            targets = [
                r["t"]
                for r in pg.rows(
                    "SELECT c.relname AS t FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE NOT i.indisvalid AND n.nspname = %s "
                    "ORDER BY 1" % schema
                )
            ]
            statement = "REINDEX INDEX %s.%s"
        for name in targets:
            result["reindexed"].append(name)
            after.append("reindex %s" % name)
            if not module.check_mode:
                pg.execute(statement % (quote_ident(p["schema"]), quote_ident(name)))
        result["changed"] = result["changed"] or bool(targets)

    result.update(diagnose(pg, p["schema"], p["top"]))
    # A new session may still see the old value for a moment after the reload: report the one set.
    result["slow_query_threshold_ms"] = current if module.check_mode or wanted is None else wanted
    if result["changed"]:
        result["diff"] = dict(before="\n".join(before) + "\n", after="\n".join(after) + "\n")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
