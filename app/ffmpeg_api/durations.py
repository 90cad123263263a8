"""The duration syntax of every command and runbook input: 90, 30m, 1.5h, 7d.

The one parser: the CLI's DURATION_TYPE and the collection's `ffmpeg_api.ops.duration_seconds`
filter (which loads this file, so it must stay standard library only) both call `parse`.
"""

from __future__ import annotations

import re

_SYNTAX = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
EXAMPLES = "90, 30m, 2h or 7d"


def parse(text) -> float:
    """Seconds in `text` (a bare number is seconds); ValueError when it is not a duration."""
    match = _SYNTAX.match(str(text))
    if not match:
        raise ValueError(f"{text!r} is not a duration like {EXAMPLES}")
    return float(match.group(1)) * UNITS[match.group(2)]
