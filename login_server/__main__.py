"""``python -m login_server``; ``imctl run login`` does the same."""

from pathlib import Path

from common.runner import run_configured
from login_server.config import LoginServerConfig
from login_server.server import serve


def run(config_path: Path | None, overrides: dict[str, str], ready_file: Path | None) -> None:
    run_configured(LoginServerConfig, "login_server", serve, config_path, overrides, ready_file)


if __name__ == "__main__":
    import sys

    from imctl.cli import main

    main(["run", "login", *sys.argv[1:]])
