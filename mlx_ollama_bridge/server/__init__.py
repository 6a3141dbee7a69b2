"""The HTTP server: a Flask app factory; gunicorn runs it (see ``gunicorn_app``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Flask

from ..config import Settings
from ..registry import Registry
from .context import EXTENSION
from .errors import register_error_handlers
from .observability import register_observability
from .ratelimit import register_rate_limit
from .security import register_security

if TYPE_CHECKING:
    from ..engine import Engine


def create_app(settings: Settings | None = None, *, engine: Engine | None = None) -> Flask:
    """Build the app. No MLX work happens here: the engine starts on the first request."""
    settings = settings or Settings.from_env()
    if engine is None:
        from ..engine import Engine  # imported here so importing the server stays light

        engine = Engine(settings)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # keep Ollama's field order
    app.json.ensure_ascii = False
    app.extensions[EXTENSION] = {
        "settings": settings,
        "registry": Registry(settings),
        "engine": engine,
    }
    from .announce import register_arrivals
    from .anthropic_api import bp as anthropic_bp
    from .ollama_api import bp as ollama_bp
    from .openai_api import bp as openai_bp
    from .ops_api import bp as ops_bp

    app.register_blueprint(ollama_bp)
    app.register_blueprint(openai_bp)
    app.register_blueprint(anthropic_bp)
    app.register_blueprint(ops_bp)
    register_error_handlers(app)
    register_arrivals(app)
    register_observability(app, settings)
    register_security(app, settings)
    register_rate_limit(app, settings)  # after security: unauthorized calls cost nothing
    return app


__all__ = ["create_app"]
