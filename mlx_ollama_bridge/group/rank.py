"""What one rank of a group runs (``python -m mlx_ollama_bridge.group.rank``, started by
``mlx.launch`` with ``MLX_RANK`` set): rank 0 the HTTP server, whose engine then uses the
group's backend (``engine.facade``); every other rank the follower loop
(``engine.group_follower``). Both first re-execute with OpenBLAS where CPU mode uses it, so
every rank computes as rank 0 does.
"""

from __future__ import annotations

import logging
import os
import sys

from .. import cpu_blas
from ..config import Settings

log = logging.getLogger(__name__)

SERVER_PID = "MLX_BRIDGE_GROUP_SERVER_PID"  # rank 0's server process: stopped on a fault


def main() -> int:
    """Run this rank until the group ends; the process exit status."""
    settings = Settings.from_env()
    cpu_blas.maybe_reexec(settings.cpu_blas)
    rank = int(os.environ.get("MLX_RANK", "0"))
    from ..server.logging_setup import configure_logging

    configure_logging(settings)
    if rank == 0:
        from ..server.gunicorn_app import serve

        os.environ[SERVER_PID] = str(os.getpid())
        serve(settings)
        return 0
    from ..engine.group import follow

    try:
        follow(settings)
    except Exception:
        log.exception("rank %d: the group broke", rank)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
