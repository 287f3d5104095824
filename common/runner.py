"""Process entry point shared by every server.

``run_server`` installs uvloop, turns SIGTERM/SIGINT into a graceful stop
(the server stops accepting, tells its peers, waits a bounded time) and a
second signal into an immediate exit. When the server is listening it may
announce its real ports in a JSON "ready file", which is how ``imctl up`` and
the end-to-end tests find servers started on port 0.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import resource
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvloop

log = logging.getLogger(__name__)

Serve = Callable[[asyncio.Event, Callable[[dict[str, Any]], None]], Awaitable[None]]


def write_ready_file(path: Path | None, info: dict[str, Any]) -> None:
    if path is None:
        return
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), **info}))
    os.replace(tmp, path)


def raise_open_file_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit (a connection is a file); log and return both."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, hard, exc)
    log.info("open-file limit %d (hard %d)", soft, hard)
    return soft, hard


def run_server(serve: Serve, ready_file: Path | None = None) -> None:
    """Run ``serve(stop, announce)`` until it returns; blocks the caller.

    The ready file also says the open-file limit the server got (``nofile``).
    """
    soft, hard = raise_open_file_limit()
    limits = {"nofile": soft, "nofile_hard": hard}

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        def on_signal(signame: str) -> None:
            if stop.is_set():
                log.warning("second %s: exiting now", signame)
                os._exit(1)
            log.info("%s: shutting down", signame)
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig.name)
        await serve(stop, lambda info: write_ready_file(ready_file, {**limits, **info}))

    uvloop.run(main())


def run_configured(
    config_cls: type[Any],
    section: str,
    serve: Callable[[Any, asyncio.Event, Callable[[dict[str, Any]], None]], Awaitable[None]],
    config_path: Path | None,
    overrides: dict[str, str],
    ready_file: Path | None,
) -> None:
    """Load ``config_cls`` from file/env/overrides, set up logging and run.

    Overrides named ``log.KEY`` set the shared ``[log]`` table (common.log.LogConfig).
    """
    from common.config import load_config
    from common.log import LogConfig, setup_logging

    own = {k: v for k, v in overrides.items() if not k.startswith("log.")}
    logging_overrides = {k.removeprefix("log."): v for k, v in overrides.items() if k.startswith("log.")}
    config = load_config(config_cls, section, config_path, own)
    log_config = load_config(LogConfig, "log", config_path, logging_overrides)
    setup_logging(getattr(config, "node_id", section), getattr(config, "log_level", "INFO"), log_config)
    run_server(lambda stop, announce: serve(config, stop, announce), ready_file)
