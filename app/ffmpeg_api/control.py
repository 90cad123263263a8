"""Runtime switches shared by every API process: maintenance mode, rate limits, DDoS mode.

They live in Redis so that one command changes every host at once, and maintenance mode can
expire by itself (a TTL) if the engineer who set it forgets it.
"""

from __future__ import annotations

import json
import time

import redis

MAINTENANCE_KEY = "ffmpeg_api:maintenance"
GLOBAL_LIMIT_KEY = "ffmpeg_api:ratelimit:global"
DDOS_KEY = "ffmpeg_api:ddos_protection"
MONITOR_PREFIX = "ffmpeg_api:monitor:"


def maintenance_status(conn: redis.Redis) -> dict:
    pipe = conn.pipeline()
    pipe.get(MAINTENANCE_KEY)
    pipe.ttl(MAINTENANCE_KEY)
    raw, ttl = pipe.execute()
    if raw is None:
        return {"enabled": False, "reason": None, "since": None, "ttl": None}
    info = json.loads(raw)
    return {
        "enabled": True,
        "reason": info.get("reason"),
        "since": info.get("since"),
        "ttl": ttl if ttl and ttl > 0 else None,
    }


def maintenance_on(conn: redis.Redis, *, reason: str = "", ttl: int | None = None) -> dict:
    value = json.dumps({"reason": reason, "since": time.time()})
    conn.set(MAINTENANCE_KEY, value, ex=ttl if ttl else None)
    return maintenance_status(conn)


def maintenance_off(conn: redis.Redis) -> dict:
    conn.delete(MAINTENANCE_KEY)
    return maintenance_status(conn)


def global_limit(conn: redis.Redis, default: int) -> int:
    raw = conn.get(GLOBAL_LIMIT_KEY)
    return int(raw) if raw is not None else default


def set_global_limit(conn: redis.Redis, limit: int) -> None:
    if limit < 0:
        raise ValueError("limit must be >= 0 (0 = unlimited)")
    conn.set(GLOBAL_LIMIT_KEY, int(limit))


def ddos_enabled(conn: redis.Redis) -> bool:
    return conn.get(DDOS_KEY) is not None


def set_ddos(conn: redis.Redis, enabled: bool) -> None:
    if enabled:
        conn.set(DDOS_KEY, str(time.time()))
    else:
        conn.delete(DDOS_KEY)
