"""The HTTP API: an application factory and its blueprints, all under /api/v1."""

from __future__ import annotations

import logging

from flask import Flask

from .. import mediastore
from ..settings import Settings
from . import admin, docs, files, health, jobs, pipeline

PREFIX = "/api/v1"


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.config["SETTINGS"] = settings
    # Multipart bodies carry some overhead beyond the file itself.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_bytes + 64 * 1024
    app.json.sort_keys = False
    logging.getLogger("ffmpeg_api").setLevel(settings.log_level)
    pipeline.init_app(app, settings)
    # The s3 backend's boto3 client, built now (about 0.3 s with the import) rather than by
    # the first request of each gunicorn process; nothing for the local backend.
    mediastore.store_for(settings)
    for bp in (health.bp, files.bp, jobs.bp, admin.bp, docs.bp):
        app.register_blueprint(bp, url_prefix=PREFIX)
    app.add_url_rule("/docs", endpoint="docs_root", view_func=docs.docs_page)
    app.add_url_rule("/metrics", endpoint="metrics_root", view_func=health.metrics)
    return app
