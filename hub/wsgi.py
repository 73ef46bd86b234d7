"""The WSGI entry point gunicorn loads: the configuration path comes from SOVEREIGN_HUB_CONFIG."""
from . import logs
from .app import create_app

logs.configure()  # before the Hub, so its start-up warnings (allow_unsigned) are logged in full
app = create_app(wait_for_schema=True)
logs.configure(app.hub.config.logging.level)
