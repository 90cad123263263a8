"""Metrics the alert rules need, exported by the service against real PostgreSQL and Redis."""

import os
import re

import requests

from ffmpeg_api.metrics import RATE_LIMIT_SCOPES


def _sample(text: str, name: str, labels: str = "") -> float:
    match = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.M)
    assert match, f"{name}{labels} not exported"
    return float(match.group(1))


def test_storage_filesystem_figures_match_statvfs(client, settings):
    text = client.get("/metrics").data.decode()
    st = os.statvfs(settings.storage_root)
    size = _sample(text, "ffmpeg_storage_filesystem_size_bytes")
    avail = _sample(text, "ffmpeg_storage_filesystem_avail_bytes")
    assert size == st.f_blocks * st.f_frsize
    # Other processes write to the same filesystem meanwhile: close, not equal.
    assert abs(avail - st.f_bavail * st.f_frsize) < 64 * 1024 * 1024
    assert 0 < avail <= size


def test_rate_limit_counters_exist_for_every_scope_before_any_refusal(start_api, settings):
    """Through gunicorn's multiprocess mode, as deployed: a fresh server has refused nothing,
    yet every scope's series is there at 0, so rate() over it is 0 rather than empty."""
    url = start_api(settings, workers=2)
    text = requests.get(url + "/metrics", timeout=10).text
    for scope in RATE_LIMIT_SCOPES:
        assert _sample(text, "rate_limit_exceeded_total", f'{{scope="{scope}"}}') == 0.0
