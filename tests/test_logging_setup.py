"""The server's own log file, rotated by size (what the LaunchAgent relies on)."""

from __future__ import annotations

import logging

import requests
from helpers import start_server, stop_server, wait_until

from mlx_ollama_bridge.config import Settings
from mlx_ollama_bridge.server.logging_setup import configure_logging


def test_log_file_rotates_at_the_configured_size(tmp_path):
    settings = Settings.from_env(
        {
            "MLX_BRIDGE_LOG_FILE": str(tmp_path / "logs" / "bridge.log"),
            "MLX_BRIDGE_LOG_MAX_BYTES": "2000",
            "MLX_BRIDGE_LOG_BACKUPS": "2",
        }
    )
    configure_logging(settings)
    try:
        logger = logging.getLogger("mlx_ollama_bridge.test")
        for i in range(200):
            logger.info("line %d %s", i, "x" * 40)
    finally:
        logging.config.dictConfig({"version": 1, "disable_existing_loggers": False})
    files = sorted(p.name for p in (tmp_path / "logs").iterdir())
    assert files == ["bridge.log", "bridge.log.1", "bridge.log.2"]
    assert all((tmp_path / "logs" / f).stat().st_size <= 2100 for f in files)
    assert "line 199" in (tmp_path / "logs" / "bridge.log").read_text()


def test_real_server_writes_its_log_and_access_lines_to_the_file(tmp_path, isolated_home):
    log_file = tmp_path / "server-logs" / "bridge.log"
    env = {
        "MLX_BRIDGE_MODELS": str(isolated_home / "models"),
        "MLX_BRIDGE_CONFIG_DIR": str(isolated_home / "config"),
        "MLX_BRIDGE_UPSTREAM": "off",
        "MLX_BRIDGE_LOG_FILE": str(log_file),
    }
    server = start_server(env, tmp_path / "stdout.log")
    try:
        requests.get(server.url + "/api/tags", timeout=10)
        wait_until(lambda: "/api/tags" in _read(log_file))
    finally:
        stop_server(server)
    text = _read(log_file)
    assert "Booting worker" in text  # gunicorn's own lines
    assert "/api/tags" in text  # the app's access line
    assert "/api/tags" not in server.log()  # nothing duplicated on stderr


def _read(path) -> str:
    return path.read_text() if path.exists() else ""
