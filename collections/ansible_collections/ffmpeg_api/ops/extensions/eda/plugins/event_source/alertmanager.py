# Copyright: FFmpeg API Ops team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Alertmanager webhook event source for ansible-rulebook.

The ansible.eda collection (home of the usual alertmanager source) is not available to this
project, so this is a small equivalent: one event per alert of each notification, with the
alerting inventory host in ``meta.hosts`` (ansible-rulebook limits run_playbook to it).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import web

DOCUMENTATION = r"""
---
short_description: Receive Alertmanager notifications as events, one per alert
description:
  - Listens for Alertmanager's webhook notifications (C(webhook_configs)) and puts one event on
    the queue for each alert they carry, C({"alert": <alert>, "notification": {...}, "host": <host>,
    "meta": {"endpoint": <path>, "hosts": [<host>]}}).
  - The host is the alert label named by O(host_label) (Prometheus' C(instance), which this
    project's scrape configuration sets to the inventory hostname), without a C(:port) suffix.
    Alerts without that label (aggregated alerts) get O(default_host) and no C(meta.hosts), so the
    ruleset's own C(hosts) applies.
  - C(notification) holds the group-level fields (receiver, status, groupKey, externalURL).
  - C(GET /health) answers C(ok): tests and probes can tell when the source listens.
options:
  host:
    description: Address to listen on.
    type: str
    default: 127.0.0.1
  port:
    description: TCP port to listen on.
    type: int
    default: 5000
  token:
    description:
      - Bearer token Alertmanager must send (C(http_config.authorization.credentials)).
      - Empty accepts any request.
    type: str
  host_label:
    description: Alert label naming the host the alert is about.
    type: str
    default: instance
  default_host:
    description: Value of C(host) for alerts without O(host_label).
    type: str
    default: all
  skip_resolved:
    description: Drop alerts whose status is C(resolved).
    type: bool
    default: false
"""

EXAMPLES = r"""
- ffmpeg_api.ops.alertmanager:
    host: 127.0.0.1
    port: 5000
    token: "{{ ALERTMANAGER_WEBHOOK_TOKEN }}"
"""

logger = logging.getLogger(__name__)

_QUEUE = web.AppKey("queue", asyncio.Queue)
_ARGS = web.AppKey("args", dict)


def alert_host(alert: dict[str, Any], host_label: str = "instance") -> str | None:
    """The inventory host an alert is about: its host label without a ':port' suffix."""
    value = (alert.get("labels") or {}).get(host_label)
    if not value:
        return None
    value = str(value)
    if value.startswith("["):  # [IPv6]:port
        return value[1:].split("]", 1)[0]
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    return value


def alert_events(
    payload: dict[str, Any],
    endpoint: str = "",
    host_label: str = "instance",
    default_host: str = "all",
    skip_resolved: bool = False,
) -> list[dict[str, Any]]:
    """Split one Alertmanager notification into one event per alert."""
    if not isinstance(payload, dict) or not isinstance(payload.get("alerts"), list):
        raise ValueError("not an Alertmanager notification: no 'alerts' list")
    notification = {
        key: payload.get(key)
        for key in ("receiver", "status", "groupKey", "externalURL", "groupLabels")
    }
    events = []
    for alert in payload["alerts"]:
        if not isinstance(alert, dict):
            continue
        if skip_resolved and alert.get("status") == "resolved":
            continue
        host = alert_host(alert, host_label)
        meta: dict[str, Any] = {"endpoint": endpoint}
        if host:
            meta["hosts"] = [host]
        events.append(
            {
                "alert": alert,
                "notification": notification,
                "host": host or default_host,
                "meta": meta,
            }
        )
    return events


async def _health(_request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def _receive(request: web.Request) -> web.Response:
    args = request.app[_ARGS]
    token = args.get("token") or ""
    if token and request.headers.get("Authorization", "") != "Bearer " + token:
        raise web.HTTPUnauthorized(text="invalid or missing bearer token")
    try:
        payload = await request.json()
        events = alert_events(
            payload,
            endpoint=request.match_info.get("endpoint", ""),
            host_label=args.get("host_label") or "instance",
            default_host=args.get("default_host") or "all",
            skip_resolved=bool(args.get("skip_resolved", False)),
        )
    except (json.JSONDecodeError, ValueError) as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    for event in events:
        await request.app[_QUEUE].put(event)
    logger.info("alertmanager: %d alert(s) received", len(events))
    return web.json_response({"events": len(events)}, status=202)


async def main(queue: asyncio.Queue, args: dict[str, Any]) -> None:
    app = web.Application()
    app[_QUEUE] = queue
    app[_ARGS] = dict(args)
    app.router.add_get("/health", _health)
    app.router.add_post(r"/{endpoint:.*}", _receive)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, args.get("host", "127.0.0.1"), int(args.get("port", 5000)))
    await site.start()
    try:
        await asyncio.Future()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    # Run by hand: print the events a notification turns into.
    class _Printer:
        async def put(self, event: dict[str, Any]) -> None:
            print(json.dumps(event))

    asyncio.run(main(_Printer(), {"port": 5000}))  # type: ignore[arg-type]
