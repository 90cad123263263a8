# Copyright: FFmpeg API Ops team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # Options of every module that wraps the service's admin CLI.
    DOCUMENTATION = r"""
options:
  cli:
    description:
      - The service's admin CLI on the managed host.
      - The default is the wrapper the C(app) role installs; it loads the host's environment file
        (database and Redis URLs, storage root) before running C(ffmpeg-api).
    type: path
    default: /usr/local/bin/ffmpeg-api-admin
notes:
  - The module runs the CLI with C(--json), and with C(--dry-run) in check mode, so that check
    mode reports exactly what a real run would change.
requirements:
  - The service deployed on the managed host (the C(app) role).
"""
