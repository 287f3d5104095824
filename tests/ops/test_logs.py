"""Structured logs and rotation (common.log): JSON lines that parse, files that roll at max_bytes."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.config import ConfigError, load_config
from common.log import LogConfig, PeerLogger, make_handler
from imctl.cluster import ServerProcess
from tests.e2e.conftest import TRACEBACK

TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    log = logging.getLogger("tests.ops.logs")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    yield log
    for handler in log.handlers:
        handler.close()
    log.handlers.clear()


def test_json_lines_parse_with_every_field(tmp_path: Path, logger: logging.Logger) -> None:
    path = tmp_path / "msg-1.log"
    logger.addHandler(make_handler("msg-1", LogConfig(format="json", file=str(path))))
    logger.info("plain %d", 1)
    PeerLogger(logger, "127.0.0.1:5000 user 7").warning('bad frame "x"\nsecond line')
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("it failed")
    lines = path.read_text().splitlines()
    assert len(lines) == 3  # a newline in a message or a traceback stays inside its line
    plain, peer, failed = (json.loads(line) for line in lines)
    assert TS.match(plain["ts"]), plain["ts"]
    assert plain == {
        "ts": plain["ts"],
        "level": "INFO",
        "node": "msg-1",
        "logger": "tests.ops.logs",
        "msg": "plain 1",
    }
    assert peer["peer"] == "127.0.0.1:5000 user 7"
    assert peer["msg"] == 'bad frame "x"\nsecond line' and peer["level"] == "WARNING"
    assert failed["exc"].startswith(TRACEBACK) and "RuntimeError: boom" in failed["exc"]
    assert TRACEBACK in lines[2]  # what tests/e2e/conftest.py greps the logs for


def test_text_lines_keep_their_shape(tmp_path: Path, logger: logging.Logger) -> None:
    path = tmp_path / "text.log"
    logger.addHandler(make_handler("db-1", LogConfig(file=str(path))))
    PeerLogger(logger, "10.0.0.1:1").info("hello")
    (line,) = path.read_text().splitlines()
    assert re.match(r"^\S+ \S+ INFO db-1 tests\.ops\.logs: \[10\.0\.0\.1:1\] hello$", line), line


def test_the_file_rotates_at_max_bytes_and_keeps_backups(tmp_path: Path, logger: logging.Logger) -> None:
    path = tmp_path / "logs" / "{node}.log"
    logger.addHandler(
        make_handler("route-1", LogConfig(format="json", file=str(path), max_bytes=2000, backups=2))
    )
    for i in range(200):
        logger.info("line %03d %s", i, "x" * 40)
    files = sorted(p.name for p in (tmp_path / "logs").iterdir())
    assert files == ["route-1.log", "route-1.log.1", "route-1.log.2"]
    for name in files:
        size = (tmp_path / "logs" / name).stat().st_size
        assert 0 < size <= 2000, (name, size)
        for line in (tmp_path / "logs" / name).read_text().splitlines():
            json.loads(line)
    last = json.loads((tmp_path / "logs" / "route-1.log").read_text().splitlines()[-1])
    assert last["msg"].startswith("line 199")


def test_bad_log_settings_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"log\.format"):
        load_config(LogConfig, "log", None, {"format": "xml"})
    with pytest.raises(ConfigError, match=r"log\.backups"):
        load_config(LogConfig, "log", None, {"backups": "-1"})
    assert load_config(LogConfig, "log", None, environ={"IMCLUSTER_LOG__FORMAT": "json"}).format == "json"


def test_a_real_server_logs_json_to_its_rotated_file(tmp_path: Path) -> None:
    server = ServerProcess(
        "msfs",
        "msfs-1",
        {
            "node_id": "msfs-1",
            "port": "0",
            "metrics_port": "0",
            "store": str(tmp_path / "files"),
            "log.format": "json",
        },
        tmp_path / "msfs-1.ready",
        tmp_path / "msfs-1.log",
        log_max_bytes=1 << 20,
    )
    server.start(None)
    try:
        assert server.wait_ready(30), server.tail()
    finally:
        server.stop(10)
    records = [json.loads(line) for line in server.log_file.read_text().splitlines()]
    assert records and all(r["node"] == "msfs-1" for r in records)
    assert any("msfs msfs-1 on http://" in r["msg"] for r in records)
    assert server.out_file.name == "msfs-1.out" and TRACEBACK not in server.out_file.read_text()


def test_a_bad_log_setting_stops_a_server_with_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "imctl",
            "run",
            "msfs",
            "--set",
            "log.format=xml",
            "--set",
            f"store={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "log.format: expected one of text, json" in result.stderr and TRACEBACK not in result.stderr
