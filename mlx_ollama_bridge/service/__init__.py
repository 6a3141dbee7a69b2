"""Run the bridge in the background at login: a launchd LaunchAgent on macOS, a systemd
user unit on Linux. ``make_manager`` picks the one for this platform; both offer the same
operations (:class:`~.common.ServiceManager`), which ``service/cli.py`` exposes as commands.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from . import launchd, systemd
from .common import (
    ServiceError,
    ServiceManager,
    ServiceSpec,
    ServiceStatus,
    check_label,
    default_log_dir,
)
from .launchd import LaunchdManager
from .systemd import SystemdManager

PLATFORMS = ("macos", "linux")


def default_platform() -> str:
    """``macos`` or ``linux`` for the running system; ServiceError elsewhere."""
    if sys.platform == "darwin":
        return "macos"
    if sys.platform.startswith("linux"):
        return "linux"
    raise ServiceError(
        f"services are supported on macOS (launchd) and Linux (systemd), not {sys.platform}"
    )


def make_manager(
    platform: str | None = None, label: str | None = None, env: Mapping[str, str] | None = None
) -> ServiceManager:
    """The service manager for ``platform`` (default: this system) and ``label``.

    Paths come from ``env`` (default ``os.environ``): ``MLX_BRIDGE_LAUNCH_AGENTS_DIR``,
    ``MLX_BRIDGE_SYSTEMD_USER_DIR`` and ``MLX_BRIDGE_LOG_DIR`` override the usual ones.
    """
    env = os.environ if env is None else env
    platform = platform or default_platform()
    if platform == "macos":
        return LaunchdManager(
            check_label(label or launchd.DEFAULT_LABEL),
            agents_dir=launchd.launch_agents_dir(env),
            log_dir=default_log_dir(env),
        )
    if platform == "linux":
        return SystemdManager(
            check_label(label or systemd.DEFAULT_LABEL), unit_dir=systemd.systemd_user_dir(env)
        )
    raise ServiceError(f"unknown service platform {platform!r}: use one of {', '.join(PLATFORMS)}")


__all__ = [
    "PLATFORMS",
    "LaunchdManager",
    "ServiceError",
    "ServiceManager",
    "ServiceSpec",
    "ServiceStatus",
    "SystemdManager",
    "default_platform",
    "make_manager",
]
