"""``<config_dir>/config.toml``: setting names as keys, values in any form the environment
variable accepts, e.g.::

    keep_alive_s = "10m"
    context_length = 8192
    origins = ["https://app.example.com"]
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Collection
from pathlib import Path

from .values import trim

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

log = logging.getLogger(__name__)

CONFIG_FILE_NAME = "config.toml"


def read_config_file(path: Path, known: Collection[str]) -> dict[str, str]:
    """Setting name -> text in the environment-variable form; {} if there is no file.

    Keys outside ``known`` are logged and ignored; so is a file that cannot be read.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        log.warning("ignoring unreadable config file path=%s error=%s", path, exc)
        return {}
    values = {}
    for key, value in data.items():
        if key not in known:
            log.warning("unknown setting in config file path=%s key=%s", path, key)
        elif isinstance(value, list):
            values[key] = ",".join(str(item) for item in value)
        elif isinstance(value, bool):
            values[key] = "true" if value else "false"
        else:
            values[key] = trim(str(value))
    return values


__all__ = ["CONFIG_FILE_NAME", "read_config_file"]
