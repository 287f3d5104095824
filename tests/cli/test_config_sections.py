"""A config file's top-level tables are checked against one registry
(common.config.SECTIONS): a misspelt one is refused with the closest known
name, by imctl (exit 2) and by a server at start."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from common.config import SECTIONS, ConfigError, load_config, section_classes
from imctl.cli import main
from msg_server.config import MsgServerConfig
from tests.cli.test_local import ROOT, _env


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "imcluster.toml"
    path.write_text(text)
    return path


def test_an_unknown_section_names_the_closest_known_one(tmp_path: Path) -> None:
    path = write(tmp_path, "[msg_srever]\nport = 8001\n")
    with pytest.raises(ConfigError, match=r"unknown section \[msg_srever\]; did you mean \[msg_server\]\?"):
        load_config(MsgServerConfig, "msg_server", path)
    # Any server's load refuses it, not only the one it was meant for.
    from db_proxy.config import DbProxyConfig

    with pytest.raises(ConfigError, match=r"\[msg_srever\]"):
        load_config(DbProxyConfig, "db_proxy", path)
    nothing_close = write(tmp_path, "[zzz]\n")
    with pytest.raises(ConfigError, match=r"unknown section \[zzz\]; known: cluster, db_proxy"):
        load_config(MsgServerConfig, "msg_server", nothing_close)


def test_every_known_section_loads(tmp_path: Path) -> None:
    path = write(tmp_path, "".join(f"[{name}]\n" for name in SECTIONS))
    for name, cls in section_classes().items():
        load_config(cls, name, path)
    code = CliRunner().invoke(main, ["config", "--json"], env=_env())
    assert code.exit_code == 0 and '"msfs"' in code.stdout


def test_imctl_and_the_servers_refuse_it(tmp_path: Path) -> None:
    path = write(tmp_path, "[imctl]\nurl = 'http://127.0.0.1:1'\n[msg_srever]\nport = 8001\n")
    result = CliRunner().invoke(main, ["--config", str(path), "user", "list"], env=_env())
    assert result.exit_code == 2 and "did you mean [msg_server]?" in result.stderr
    assert "Traceback" not in result.output
    started = subprocess.run(
        [sys.executable, "-m", "imctl", "run", "msg", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
    )
    assert started.returncode == 2 and "unknown section [msg_srever]" in started.stderr
    assert "Traceback" not in started.stderr
