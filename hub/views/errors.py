"""The one JSON form of every error the hub answers over HTTP."""
from __future__ import annotations

from flask import jsonify


def error_response(status: int, code: str, message: str, details: dict | None = None):
    """``({"error": code, "message": text, "details": {...}}, status)`` for a Flask view to return."""
    return jsonify({"error": code, "message": message, "details": details or {}}), status
