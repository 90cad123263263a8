"""WSGI entry point: `gunicorn -c python:ffmpeg_api.gunicorn_conf ffmpeg_api.wsgi:app`."""

from .api import create_app

app = create_app()
