# Copyright: FFmpeg API Ops team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # Options of the modules that drive PostgreSQL's own tools on the database host.
    DOCUMENTATION = r"""
options:
  database:
    description:
      - The service's database.
    type: str
    default: ffmpeg_api
  port:
    description:
      - Port of the local cluster; also the name of its Unix socket, and how Debian's
        C(pg_wrapper) picks the matching version of the client tools.
    type: int
    default: 5432
  os_user:
    description:
      - The operating-system user the PostgreSQL tools run as (through C(runuser) when the
        module runs as root). It connects over the local Unix socket with peer authentication,
        so no password is involved; it must be a database superuser (Debian's C(postgres) is).
    type: str
    default: postgres
notes:
  - Runs on the database host itself (the C(database) group), over the local socket.
requirements:
  - PostgreSQL's client tools (C(psql), C(pg_dump), C(pg_restore), C(pg_isready)) on the host.
  - C(runuser) (util-linux) when the module runs as root.
"""
