"""gunicorn settings, read from the environment so that one file serves every host.

Prometheus' multiprocess mode needs a directory shared by the workers and emptied at each
start; a dead worker's live gauges are removed in `child_exit`.
"""

import multiprocessing
import os
import shutil
import tempfile

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", multiprocessing.cpu_count() * 2 + 1))
threads = int(os.environ.get("GUNICORN_THREADS", "1"))
worker_class = "gthread" if threads > 1 else "sync"
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "120"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "5"))
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "0"))
accesslog = None  # the application writes its own JSON access lines
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
proc_name = "ffmpeg-api"
forwarded_allow_ips = os.environ.get("GUNICORN_FORWARDED_ALLOW_IPS", "127.0.0.1")
# gunicorn >= 25.1 opens a control socket (for `gunicornc`) under $XDG_RUNTIME_DIR or
# $HOME/.gunicorn, which the service user cannot write (its home is the root-owned app root):
# every start logged a permission error. Nothing here uses it: the worker count is changed with
# TTIN/TTOU signals (roles/api/files/gunicorn_workers.sh), reloads with HUP. Off, so there is no
# second control channel to secure either.
control_socket_disable = True

_metrics_dir = os.environ.setdefault(
    "PROMETHEUS_MULTIPROC_DIR",
    os.path.join(
        tempfile.gettempdir(), f"ffmpeg-api-metrics-{bind.replace(':', '_').replace('/', '_')}"
    ),
)


def on_starting(server):
    shutil.rmtree(_metrics_dir, ignore_errors=True)
    os.makedirs(_metrics_dir, exist_ok=True)


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
