# Copyright: FFmpeg API Ops team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""`duration_seconds`: a runbook input's duration in seconds, by the service's own parser.

The syntax (90, 30m, 1.5h, 7d) is the service's (`app/ffmpeg_api/durations.py`); this filter
loads that file rather than restating it. The collection lives next to the app in this
repository (and in the AWX project, which is the repository), so the file is found by walking
up from here; an installed `ffmpeg_api` package is the fallback.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: duration_seconds
short_description: Seconds in a duration written in the service's syntax (90, 30m, 2h, 7d)
version_added: 1.0.0
description:
  - Parses a duration with the FFmpeg API's own parser (the one behind the CLI's C(--ttl),
    C(--older-than) and C(--since)), so that a playbook refuses exactly what the CLI refuses.
  - Returns C(None) when the value is not a duration, for use in C(ansible.builtin.assert).
positional: _input
options:
  _input:
    description: The duration, e.g. C(90), C(30m), C(1.5h) or C(7d).
    type: raw
    required: true
author:
  - FFmpeg API Ops team (@ffmpeg-api-ops)
"""

EXAMPLES = r"""
- name: Check an input
  ansible.builtin.assert:
    that: (older_than | ffmpeg_api.ops.duration_seconds) is not none
"""

RETURN = r"""
_value:
  description: Seconds (a float), or C(None) when the input is not a duration.
  type: float
"""

import importlib.util
import os

from ansible.errors import AnsibleFilterError

_PARSER = None


def _parser():
    """The service's `durations` module: the repository's copy of the app, else the installed
    package."""
    global _PARSER
    if _PARSER is not None:
        return _PARSER
    here = os.path.dirname(os.path.abspath(__file__))
    while True:
        candidate = os.path.join(here, "app", "ffmpeg_api", "durations.py")
        if os.path.isfile(candidate):
            spec = importlib.util.spec_from_file_location("_ffmpeg_api_durations", candidate)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            _PARSER = module
            return module
        parent = os.path.dirname(here)
        if parent == here:
            break
        here = parent
    try:
        from ffmpeg_api import durations
    except ImportError:
        raise AnsibleFilterError(
            "duration_seconds needs the service's parser: app/ffmpeg_api/durations.py beside the"
            " collection, or the ffmpeg-api package installed on the controller"
        )
    _PARSER = durations
    return durations


def duration_seconds(value):
    try:
        return _parser().parse(value)
    except ValueError:
        return None


class FilterModule(object):
    def filters(self):
        return {"duration_seconds": duration_seconds}
