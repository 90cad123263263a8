# Copyright: FFmpeg API Ops team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run PostgreSQL's own tools on the database host as its OS user, over the local socket.

The database runbooks need superuser work (pg_dump of every object, DROP/CREATE DATABASE,
ALTER SYSTEM, pg_basebackup), which Debian grants to the `postgres` OS user by peer
authentication: no password to handle. Queries go through psql and come back as one JSON
document (`json_agg`), so no database driver is needed on the host.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import pwd


def postgres_local_argument_spec():
    return dict(
        database=dict(type="str", default="ffmpeg_api"),
        port=dict(type="int", default=5432),
        os_user=dict(type="str", default="postgres"),
    )


def quote_ident(name):
    return '"%s"' % name.replace('"', '""')


def quote_literal(text):
    return "'%s'" % str(text).replace("'", "''")


class PgLocal(object):
    """Runs tools as params['os_user'] against params['port']; failures end the module."""

    def __init__(self, module):
        self.module = module
        self.database = module.params["database"]
        self.port = module.params["port"]
        self.os_user = module.params["os_user"]
        try:
            self.user_entry = pwd.getpwnam(self.os_user)
        except KeyError:
            module.fail_json(
                msg="OS user %s does not exist: is PostgreSQL installed on this host?"
                % self.os_user
            )

    def as_user(self, argv):
        """argv run as the OS user (through runuser when the module runs as root)."""
        if os.geteuid() == self.user_entry.pw_uid:
            return list(argv)
        runuser = self.module.get_bin_path("runuser", required=True)
        return [runuser, "-u", self.os_user, "--"] + list(argv)

    def run(self, argv, check=True, cwd=None, **kwargs):
        rc, out, err = self.module.run_command(self.as_user(argv), cwd=cwd or "/", **kwargs)
        if check and rc != 0:
            self.module.fail_json(
                msg="%s failed (exit %s): %s"
                % (os.path.basename(argv[0]), rc, (err or out).strip()),
                rc=rc,
                stdout=out,
                stderr=err,
                cmd=" ".join(argv),
            )
        return rc, out, err

    def tool(self, name):
        # Debian's pg_wrapper in /usr/bin picks the server version from the cluster on --port.
        return self.module.get_bin_path(name, required=True)

    def psql_argv(self, sql, database=None):
        return [
            self.tool("psql"),
            "-X",
            "-A",
            "-t",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-p",
            str(self.port),
            "-d",
            database or self.database,
            "-c",
            sql,
        ]

    def execute(self, sql, database=None):
        """Run statements; their text output (stdout)."""
        return self.run(self.psql_argv(sql, database))[1]

    def rows(self, query, database=None):
        """The rows of a query as a list of dicts."""
        wrapped = "SELECT coalesce(json_agg(q), '[]'::json) FROM (%s) AS q" % query
        out = self.execute(wrapped, database).strip()
        try:
            return json.loads(out or "[]")
        except ValueError:
            self.module.fail_json(msg="psql returned no JSON for: %s" % query, stdout=out)

    def value(self, query, database=None):
        """The first column of the first row, or None."""
        found = self.rows(query, database)
        if not found:
            return None
        return next(iter(found[0].values()))

    def is_ready(self):
        rc, _out, _err = self.module.run_command(
            [self.tool("pg_isready"), "-q", "-p", str(self.port)]
        )
        return rc == 0

    def database_exists(self, name=None):
        return bool(
            self.value(
                "SELECT 1 FROM pg_database WHERE datname = %s"
                % quote_literal(name or self.database),
                database="postgres",
            )
        )

    def database_comment(self, name=None):
        return self.value(
            "SELECT shobj_description(oid, 'pg_database') AS c FROM pg_database WHERE datname = %s"
            % quote_literal(name or self.database),
            database="postgres",
        )

    def chown_to_user(self, path):
        os.chown(path, self.user_entry.pw_uid, self.user_entry.pw_gid)

    def ensure_dir(self, path, mode=0o700):
        """Create path (and parents) owned by the OS user; True when it was created."""
        if os.path.isdir(path):
            return False
        os.makedirs(path, mode)
        os.chmod(path, mode)
        self.chown_to_user(path)
        return True
