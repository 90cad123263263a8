"""The baseline for the HTTP benchmark: a Flask route that does nothing, served by the same
gunicorn configuration as the service."""

from flask import Flask, jsonify

app = Flask(__name__)


@app.get("/bare")
def bare():
    return jsonify({"status": "ok"})


@app.get("/api/v1/health/live")
def live():
    return jsonify({"status": "alive"})
