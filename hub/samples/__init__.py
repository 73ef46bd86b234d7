"""The platform's sample payloads (from its documentation), for send-test, tests and docs."""
from __future__ import annotations

import json
from importlib import resources

NAMES = ("end-of-call-report", "end-of-call-report-full", "end-of-call-report-web-call", "status-update")


def load_sample(name: str = "end-of-call-report-full") -> dict:
    """One sample payload (``NAMES``), as a fresh dict."""
    return json.loads(resources.files(__name__).joinpath(f"{name}.json").read_text())


def analysis_schema() -> dict:
    """The analysis JSON Schema from the platform's documentation."""
    return json.loads(resources.files(__name__).joinpath("analysis-schema.json").read_text())
