"""One Redis client per process and URL (clients hold sockets, which must not cross a fork)."""

from __future__ import annotations

import os
import threading

import redis

_clients: dict[str, tuple[int, redis.Redis]] = {}
_lock = threading.Lock()


def get_redis(url: str) -> redis.Redis:
    pid = os.getpid()
    with _lock:
        entry = _clients.get(url)
        if entry is not None and entry[0] == pid:
            return entry[1]
        client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)
        _clients[url] = (pid, client)
        return client


def _reset_after_fork() -> None:
    # A thread of the parent may have held the lock at fork time; the child starts clean.
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_reset_after_fork)
