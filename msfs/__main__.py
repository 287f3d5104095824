"""``python -m msfs``; ``imctl run msfs`` does the same."""

from pathlib import Path

from common.runner import run_configured
from msfs.config import MsfsConfig
from msfs.server import serve


def run(config_path: Path | None, overrides: dict[str, str], ready_file: Path | None) -> None:
    run_configured(MsfsConfig, "msfs", serve, config_path, overrides, ready_file)


if __name__ == "__main__":
    import sys

    from imctl.cli import main

    main(["run", "msfs", *sys.argv[1:]])
