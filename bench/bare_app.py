"""The baseline for bench/ingest.py: a Flask app that reads the body and answers 200, nothing else.

Run under gunicorn with 2 sync workers (the hub's former server model; bench/ingest.py runs the hub
with each model beside it), so the difference in throughput is the hub's own work on the ack path.
"""
from flask import Flask, request

app = Flask(__name__)


@app.post("/webhooks/hms")
def receive():
    request.get_data(cache=False)
    return "", 200


@app.get("/healthz")
def healthz():
    return "ok", 200
