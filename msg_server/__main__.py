"""``python -m msg_server``; ``imctl run msg`` does the same."""

from pathlib import Path

from common.runner import run_configured
from msg_server.config import MsgServerConfig
from msg_server.server import serve


def run(config_path: Path | None, overrides: dict[str, str], ready_file: Path | None) -> None:
    run_configured(MsgServerConfig, "msg_server", serve, config_path, overrides, ready_file)


if __name__ == "__main__":
    import sys

    from imctl.cli import main

    main(["run", "msg", *sys.argv[1:]])
