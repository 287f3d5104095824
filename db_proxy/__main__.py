"""``python -m db_proxy``; ``imctl run db`` does the same."""

from pathlib import Path

from common.runner import run_configured
from db_proxy.config import DbProxyConfig
from db_proxy.server import serve


def run(config_path: Path | None, overrides: dict[str, str], ready_file: Path | None) -> None:
    run_configured(DbProxyConfig, "db_proxy", serve, config_path, overrides, ready_file)


if __name__ == "__main__":
    import sys

    from imctl.cli import main

    main(["run", "db", *sys.argv[1:]])
