"""Entry point: `api [--host H] [--port P] [--config FILE]` serves one uvicorn worker
with the connection limits of apps/api/server.py.

Why one worker per process: scaling is done with replicas (Kubernetes) and each process
holds one model in memory; the config is read here, once, before the app exists.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import sys
from typing import Sequence


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="api", description="Serve the churn-risk API.")
    parser.add_argument("--config", help="YAML config (default: $CHURN_MLOPS_CONFIG, else built-in defaults)")
    parser.add_argument("--host", help="bind address (default: api.host from the config)")
    parser.add_argument("--port", type=int, help="TCP port (default: api.port from the config)")
    return parser.parse_args(argv)


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)
MMAP_THRESHOLD_BYTES = 128 * 1024  # glibc's initial value, kept fixed


def return_large_buffers_to_the_system() -> None:
    """Keep glibc from holding on to freed request bodies (bounded RSS after a batch flood).

    Why: glibc raises its mmap threshold each time a large block is freed (up to 32 MiB),
    so after the first 1 MiB body every later one comes from the heap, which does not
    shrink: RSS grew by the largest burst of bodies ever held at once. A fixed threshold
    keeps blocks over 128 KiB in their own mappings, returned to the system when freed.
    No-op where the C library is not glibc.
    """
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    except (OSError, AttributeError):
        pass


def block_pydantic_v1() -> None:
    """Make `import pydantic.v1` fail in the API process (nothing in it uses pydantic v1).

    Why: FastAPI imports the whole pydantic.v1 package (about 40 modules, 35-55 ms of the
    start) only to check that a route's response model is not a v1 model, and treats an
    ImportError as "no" (fastapi._compat). A None entry in sys.modules is Python's way to
    make an import raise ImportError. Left alone if something imported it already.
    """
    sys.modules.setdefault("pydantic.v1", None)  # type: ignore[arg-type]


def freeze_startup_objects() -> None:
    """Move the ~130k objects created by imports out of the garbage collector's reach, and
    turn the collector (off since `main` began) back on.

    Why: a full collection scans every tracked object; with numpy, pydantic and FastAPI
    loaded that takes tens of milliseconds, a latency spike on whatever request triggers
    it. These objects live as long as the process anyway. No collection first: the imports
    leave about 500 unreachable objects, not worth the 35-50 ms of a start it would cost.
    Done once, before any model is loaded, so a replaced model is never frozen.
    """
    gc.freeze()
    gc.enable()


def main(argv: Sequence[str] | None = None) -> int:
    # The collector stays off while the imports below create their ~130k objects (they
    # would trigger dozens of collections: ~10% of the time to /ready); freeze_startup_objects
    # turns it back on. That is why these imports are here and not at the top.
    gc.disable()
    block_pydantic_v1()
    import uvicorn

    from apps.api.app import create_app
    from apps.api.logs import configure_logging, log_event
    from apps.api.server import server_config
    from apps.api.settings import serving_config
    from churn.config.settings import load_config
    from churn.invocation.workdir import enter_invocation_directory
    from churn.observability.collector import BatchCollector

    enter_invocation_directory()
    args = parse_args(argv)
    config = serving_config(load_config(args.config))
    configure_logging(config.api.log_level)
    host = args.host or config.api.host
    port = args.port if args.port is not None else config.api.port
    log_event("api_config", host=host, port=port, data_root=str(config.data_root))
    app = create_app(config, collectors=[BatchCollector(config.data_root)])  # the batch Jobs' reports
    return_large_buffers_to_the_system()
    freeze_startup_objects()
    uvicorn.Server(server_config(app, config.api, app.state.metrics, host, port)).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
