"""Children that die with their parent: PR_SET_PDEATHSIG, set once, used by every fork.

A process manager (supervisor, systemd) watches only the process it started. When that
process is SIGKILLed, its children (an RQ work horse, RQ's scheduler, ffmpeg) would be
reparented to PID 1 and keep running outside it: a horse still writing a job that the
restarted worker runs again, a second scheduler. With the parent-death signal they get
SIGKILL the moment their parent goes.

Linux sends the signal when the *thread* that forked the child exits, not the process, so
fork from a thread that lives as long as the child is wanted (the main thread).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1
try:  # resolved before any fork so the child only makes a plain foreign call
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    _prctl = _libc.prctl
    _prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    _prctl.restype = ctypes.c_int
except (OSError, AttributeError):  # pragma: no cover - non-Linux
    _prctl = None

_SIGKILL = int(signal.SIGKILL)


def die_with_parent(parent: int) -> None:
    """In a freshly forked child of `parent`: be SIGKILLed when the parent dies, and exit at
    once if it already died before the signal was armed."""
    if _prctl is None:  # pragma: no cover
        return
    _prctl(_PR_SET_PDEATHSIG, _SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def preexec() -> Callable[[], None] | None:
    """A `preexec_fn` for subprocess: the child dies with the calling process."""
    if _prctl is None:  # pragma: no cover
        return None
    parent = os.getpid()

    def run() -> None:
        die_with_parent(parent)

    return run


_forks_armed = False


def arm_every_fork() -> None:
    """From now on every os.fork() of this process (RQ's work horse and scheduler) gives a
    child that dies with it. Idempotent."""
    global _forks_armed
    if _forks_armed or _prctl is None:
        return
    parent = [os.getpid()]

    def before() -> None:
        parent[0] = os.getpid()

    os.register_at_fork(before=before, after_in_child=lambda: die_with_parent(parent[0]))
    _forks_armed = True
