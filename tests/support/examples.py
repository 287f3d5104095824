"""The ``imctl run`` commands the example configs' comments show, parsed.

The multi-host bed runs exactly these, and the unit tests check that the
servers they start neither share a port nor miss each other.
"""

from __future__ import annotations

import re
from pathlib import Path

from common.config import parse_assignments

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "scripts" / "examples"
SECTIONS = {
    "msg": "msg_server",
    "db": "db_proxy",
    "route": "route_server",
    "login": "login_server",
    "file": "file_server",
    "msfs": "msfs",
}


def run_commands(path: Path) -> list[tuple[str, dict[str, str]]]:
    """(kind as ``imctl run`` names it, its ``--set`` overrides) for each command, in order."""
    lines = [line.lstrip("#").strip() for line in path.read_text().splitlines() if line.startswith("#")]
    comments = re.sub(r"\s+", " ", " ".join(line.removesuffix("\\") for line in lines))
    found = []
    for kind, options in re.findall(r"imctl run (\w+)((?: --\S+(?: [^-\s]\S*)?)*)", comments):
        found.append((kind, parse_assignments(re.findall(r"--set (\S+)", options))))
    return found
