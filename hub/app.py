"""The Flask app factory: ``create_app(path)`` for gunicorn, ``create_app(config_data=...)`` in tests."""
from __future__ import annotations

import os

from flask import Flask
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from .core import Hub
from .views import api, dashboard, meta, webhooks
from .views.errors import error_response

CONFIG_ENV = "SOVEREIGN_HUB_CONFIG"


def create_app(config_path: str | None = None, *, config_data: dict | None = None, hub: Hub | None = None,
               start_dispatcher: bool = False, wait_for_schema: bool = False) -> Flask:
    """Build the app over a Hub. ``start_dispatcher`` runs delivery threads in this process
    (tests and single-process use); ``serve`` runs them in their own process instead.
    ``wait_for_schema``: wait for an upgrade under way (``[store] schema_wait_seconds``)."""
    if hub is None:
        path = config_path or (None if config_data is not None else os.environ.get(CONFIG_ENV))
        hub = Hub.from_path(path, data=config_data, wait_for_schema=wait_for_schema)
    app = Flask(__name__)
    app.hub = hub
    # One byte over the limit, so the receiver can tell "exactly the limit" from "more" on a
    # chunked body (werkzeug cuts such a stream at MAX_CONTENT_LENGTH without an error).
    app.config["MAX_CONTENT_LENGTH"] = hub.config.server.max_body_bytes + 1
    app.json.sort_keys = False
    proxies = hub.config.server.trusted_proxies
    if proxies:  # the client's address, scheme and host as the proxies in front saw them
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies, x_host=proxies)

    app.register_blueprint(webhooks.bp)
    app.register_blueprint(meta.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(dashboard.bp)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        code = (exc.name or "error").lower().replace(" ", "_")
        return error_response(exc.code or 500, code, exc.description or exc.name)

    hub.pm.hook.register_routes(register=app.register_blueprint)
    hub.pm.hook.startup(hub=hub.plugin_hub)
    if start_dispatcher:
        hub.dispatcher.start(hub.config.dispatch.workers)
    return app
