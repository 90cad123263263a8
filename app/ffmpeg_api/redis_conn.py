"""One Redis client per process and URL (clients hold sockets, which must not cross a fork).

Clients fail fast, so that a Redis outage is a quick 503 and not a slow 500: every command
and every connection attempt is bounded (`SOCKET_TIMEOUT`, `CONNECT_TIMEOUT`), and a failed
connection is retried once, at once (a pooled connection that a Redis restart closed is
replaced by a new one). redis-py's default retries ten times with backoff on timeouts too:
about 5 s against a refused port, minutes against a hung server. The URL may set its own
`socket_timeout` / `socket_connect_timeout` (`redis://host:6379/0?socket_timeout=2`).

RQ workers wait on their queues with their own client (see worker.py), whose socket timeout
outlasts the blocking dequeue.
"""

from __future__ import annotations

import os
import threading

import redis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.retry import Retry

# A healthy Redis answers this service's commands (small scripts, hashes, counters) in
# milliseconds; a second without an answer is a server that is not serving.
SOCKET_TIMEOUT = 1.0
CONNECT_TIMEOUT = 1.0
RETRIES = 1

_clients: dict[str, tuple[int, redis.Redis]] = {}
_lock = threading.Lock()


def get_redis(url: str) -> redis.Redis:
    pid = os.getpid()
    with _lock:
        entry = _clients.get(url)
        if entry is not None and entry[0] == pid:
            return entry[1]
        client = redis.Redis.from_url(
            url,
            socket_timeout=SOCKET_TIMEOUT,
            socket_connect_timeout=CONNECT_TIMEOUT,
            # Timeouts are not retried: a server that did not answer in time will not answer
            # a second try sooner.
            retry=Retry(NoBackoff(), RETRIES, supported_errors=(RedisConnectionError,)),
        )
        _clients[url] = (pid, client)
        return client


def _reset_after_fork() -> None:
    # A thread of the parent may have held the lock at fork time; the child starts clean.
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_reset_after_fork)
