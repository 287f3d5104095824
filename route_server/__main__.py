"""``python -m route_server``; ``imctl run route`` does the same."""

from pathlib import Path

from common.runner import run_configured
from route_server.config import RouteServerConfig
from route_server.server import serve


def run(config_path: Path | None, overrides: dict[str, str], ready_file: Path | None) -> None:
    run_configured(RouteServerConfig, "route_server", serve, config_path, overrides, ready_file)


if __name__ == "__main__":
    import sys

    from imctl.cli import main

    main(["run", "route", *sys.argv[1:]])
