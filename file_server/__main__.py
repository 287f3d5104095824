"""``python -m file_server``; ``imctl run file`` does the same."""

from pathlib import Path

from common.runner import run_configured
from file_server.config import FileServerConfig
from file_server.server import serve


def run(config_path: Path | None, overrides: dict[str, str], ready_file: Path | None) -> None:
    run_configured(FileServerConfig, "file_server", serve, config_path, overrides, ready_file)


if __name__ == "__main__":
    import sys

    from imctl.cli import main

    main(["run", "file", *sys.argv[1:]])
