"""Running the app under gunicorn through its embedding API.

One worker (MLX state lives in one process), ``gthread`` threads for concurrent HTTP. The app
and with it the engine are built in the worker after fork (``preload_app`` off), because
Metal state does not survive a fork. If the worker dies, gunicorn's master starts a new one.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from gunicorn.app.base import BaseApplication

from .. import cpu_blas
from ..config import Settings
from .logging_setup import logging_config
from .shutdown import install_sigterm_hook

log = logging.getLogger(__name__)


class BridgeApplication(BaseApplication):
    """A gunicorn application serving ``create_app(settings)``."""

    def __init__(self, settings: Settings, overrides: dict[str, Any] | None = None) -> None:
        self.settings = settings
        self.options = {
            "bind": [settings.host.bind],
            "workers": 1,
            "worker_class": "gthread",
            "threads": settings.threads,
            "timeout": 120,  # heartbeat of the worker's main loop, not a per-request limit
            "graceful_timeout": settings.graceful_timeout_s,
            "keepalive": 5,
            "preload_app": False,
            "accesslog": None,  # the app writes one key=value line per request itself
            "logconfig_dict": logging_config(settings),
            "proc_name": "mlx-ollama-bridge",
            # gunicorn >= 24 opens a control socket in ~/.gunicorn shared by every instance.
            "control_socket_disable": True,
            "worker_exit": self._stop_engine,
            **(overrides or {}),
        }
        self._engine = None
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            if key in self.cfg.settings:  # settings newer gunicorns added are skipped on old ones
                self.cfg.set(key, value)

    def load(self):
        # Runs in the worker process.
        from ..store.manage import recover
        from . import create_app

        app = create_app(self.settings)
        extension = app.extensions["mlx_ollama_bridge"]
        recover(extension["registry"])  # what a killed worker's writes left behind
        engine = extension["engine"]
        engine.start()
        install_sigterm_hook(float(self.cfg.graceful_timeout))  # after gunicorn's handlers
        self._engine = engine  # loaded: from now on the worker ends through _stop_engine
        return app

    def _stop_engine(self, server: Any, worker: Any) -> None:
        # gunicorn calls this in the worker as it exits (after a graceful stop): models are
        # unloaded and the scheduler thread joined. Then the worker ends at once, without
        # interpreter finalization: MLX's own threads abort the process now and then while
        # C++ static destructors run ("terminate called"), after everything is saved.
        if self._engine is None:
            return  # the app never loaded: gunicorn's own exit code tells the master why
        self._engine.stop(timeout=float(self.cfg.graceful_timeout))
        logging.shutdown()  # flush the log handlers: nothing else is left to run
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(0)


def serve(settings: Settings, overrides: dict[str, Any] | None = None) -> None:
    """Serve until stopped (blocks).

    On Linux with MLX on the CPU the process first re-executes itself once with OpenBLAS in
    ``LD_PRELOAD`` when one is installed (``cpu_blas.py``; ``MLX_BRIDGE_CPU_BLAS=off`` opts
    out): the gunicorn master and its worker then use it instead of MLX's reference BLAS.
    """
    cpu_blas.maybe_reexec(settings.cpu_blas)  # returns only if no re-exec is needed
    if cpu_blas.mlx_runs_on_cpu():
        log.info("cpu blas: %s", cpu_blas.describe(setting=settings.cpu_blas))
    BridgeApplication(settings, overrides).run()
