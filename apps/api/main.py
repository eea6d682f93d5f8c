"""Entry point: `api [--host H] [--port P] [--config FILE]` serves one uvicorn worker
with the connection limits of apps/api/server.py.

Why one worker per process: scaling is done with replicas (Kubernetes) and each process
holds one model in memory; the config is read here, once, before the app exists.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import importlib.util
import os
import sys
from types import ModuleType
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


def disable_pydantic_plugins() -> None:
    """Tell pydantic not to look for plugins (none is installed in the image).

    Why: pydantic's documented switch `PYDANTIC_DISABLE_PLUGINS`; without it the first model
    scans the entry points of every installed distribution (~1% of the start). An explicit
    value in the environment is kept.
    """
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")


def import_fastapi_deferring_openapi_models() -> None:
    """Import FastAPI with the validators of its own models built on first use, not at import.

    Why: `fastapi.openapi.models` defines ~40 pydantic models of the OpenAPI document, each
    compiled into a validator when the module is imported (~6% of the start); they are used
    only to check the document, when /openapi.json is first asked for. pydantic's
    `defer_build` postpones exactly that; FastAPI does not set it, so the default is switched
    for the duration of this import only (models defined later, ours included, are built as
    usual). If pydantic's internals differ (another version), FastAPI is imported plainly.
    main_test checks that the models are deferred and apps/api's OpenAPI tests that the
    document is unchanged.
    """
    if "fastapi" in sys.modules:
        return
    try:
        from pydantic._internal._config import config_defaults
    except ImportError:
        config_defaults = {}
    if config_defaults.get("defer_build") is not False:
        import fastapi  # noqa: F401
        return
    config_defaults["defer_build"] = True
    try:
        import fastapi  # noqa: F401,F811
    finally:
        config_defaults["defer_build"] = False


def import_uvicorn_server() -> ModuleType:
    """`uvicorn` with its `Config` and `Server`, without running the package's `__init__`.

    Why: uvicorn's `__init__` imports its command line (`uvicorn.main`: click) and, through
    it, the reload and multi-worker supervisors (multiprocessing): ~3% of the start, none of
    it used by a server started from Python. The package module is created from its spec
    (so `uvicorn.*` submodules import as usual) and given the two names the API uses. If
    something imported uvicorn already, that module is returned.
    """
    if "uvicorn" in sys.modules:
        return sys.modules["uvicorn"]
    spec = importlib.util.find_spec("uvicorn")
    if spec is None or spec.loader is None:
        raise ImportError("uvicorn is not installed")
    package = importlib.util.module_from_spec(spec)
    sys.modules["uvicorn"] = package
    try:
        from uvicorn.config import Config
        from uvicorn.server import Server
    except BaseException:
        del sys.modules["uvicorn"]
        raise
    package.Config = Config  # type: ignore[attr-defined]
    package.Server = Server  # type: ignore[attr-defined]
    return package


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
    disable_pydantic_plugins()
    import_fastapi_deferring_openapi_models()
    uvicorn = import_uvicorn_server()

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
