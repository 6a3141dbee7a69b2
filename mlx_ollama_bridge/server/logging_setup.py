"""Logging for the server process: standard error, or a size-rotated file.

Rotation is done by the logging handler (no shell loop, no external tool), so a bridge
started at login by launchd cannot fill the disk with its log.
"""

from __future__ import annotations

import logging.config
from typing import Any

from ..config import Settings

_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def logging_config(settings: Settings) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` dict for the app and gunicorn's loggers."""
    level = "DEBUG" if settings.debug else "INFO"
    if settings.log_file is not None:
        settings.log_file.parent.mkdir(parents=True, exist_ok=True)
        handler: dict[str, Any] = {
            "class": "logging.handlers.RotatingFileHandler",
            "filename": str(settings.log_file),
            "maxBytes": settings.log_max_bytes,
            "backupCount": settings.log_backups,
            "encoding": "utf-8",
        }
    else:
        handler = {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"}
    handler["formatter"] = "plain"
    gunicorn = {"level": level, "handlers": ["main"], "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": _FORMAT}},
        "handlers": {"main": handler},
        "root": {"level": level, "handlers": ["main"]},
        "loggers": {"gunicorn.error": gunicorn, "gunicorn.access": dict(gunicorn)},
    }


def configure_logging(settings: Settings) -> None:
    """Apply :func:`logging_config` to this process."""
    logging.config.dictConfig(logging_config(settings))
