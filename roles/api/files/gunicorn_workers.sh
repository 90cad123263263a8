#!/bin/bash
# Set the worker count of a running gunicorn master without restarting it: TTIN adds one
# worker, TTOU retires the oldest (after its request in hand). One signal at a time (gunicorn
# keeps at most five pending), each waited for.
#   gunicorn_workers.sh MASTER_PID TARGET
# Prints "workers: FROM -> TO"; exits 1 when gunicorn does not follow.
set -euo pipefail
pid=$1
target=$2
graceful=${3:-30}
count() { pgrep -P "$pid" | wc -l; }
now=$(count)
from=$now
while [ "$now" -ne "$target" ]; do
    if [ "$now" -lt "$target" ]; then
        sig=TTIN want=$((now + 1)) wait=100
    else
        sig=TTOU want=$((now - 1)) wait=$(((graceful + 5) * 10))
    fi
    kill -s "$sig" "$pid"
    for _ in $(seq "$wait"); do
        now=$(count)
        [ "$now" -eq "$want" ] && break
        sleep 0.1
    done
    if [ "$now" -ne "$want" ]; then
        echo "gunicorn $pid: $sig left $now workers, wanted $want" >&2
        exit 1
    fi
done
if [ "$from" -eq "$now" ]; then
    echo "workers: $now (unchanged)"
else
    echo "workers: $from -> $now"
fi
