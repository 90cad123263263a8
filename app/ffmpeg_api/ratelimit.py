"""Fixed-window rate limits counted in Redis, so every API process and host shares them."""

from __future__ import annotations

import time
from dataclasses import dataclass

WINDOW = 60
PREFIX = "ffmpeg_api:rl:"


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    limit: int
    count: int
    retry_after: int
    scope: str


def window_now(now: float | None = None) -> tuple[int, int]:
    """(window number, seconds until it ends)."""
    now = time.time() if now is None else now
    window = int(now // WINDOW)
    return window, max(1, int((window + 1) * WINDOW - now + 0.999))


def verdict(scope: str, count: int, limit: int, retry_after: int) -> Verdict:
    allowed = limit <= 0 or count <= limit
    return Verdict(allowed, limit, count, 0 if allowed else retry_after, scope)
