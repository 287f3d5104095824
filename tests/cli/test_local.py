"""imctl on this machine: `up` with its generated admin token, and `db
init|migrate|check` (`user add --offline`: test_offline.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from db_proxy.storage.schema import LATEST_VERSION
from imctl.cli import main
from tests.cli.conftest import free_port
from tests.support.databases import fresh_mysql_url

ROOT = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict[str, str | None]:
    clean: dict[str, str | None] = {k: None for k in os.environ if k.startswith("IMCLUSTER_")}
    return {**clean, **extra}


@pytest.mark.parametrize("engine", ["sqlite", "mysql"])
def test_db_check_and_migrate(engine: str, tmp_path: Path) -> None:
    def run(url: str) -> None:
        runner = CliRunner()
        check = runner.invoke(main, ["db", "check", "--database-url", url], env=_env())
        if engine == "sqlite":  # no file yet: db check does not make one (test_db_check.py)
            assert check.exit_code == 1 and "does not exist" in check.stdout
        else:
            assert check.exit_code == 1 and f"schema version 0, expected {LATEST_VERSION}" in check.stdout
        migrated = runner.invoke(main, ["db", "migrate", "--database-url", url], env=_env())
        assert migrated.exit_code == 0 and f"0 -> {LATEST_VERSION}" in migrated.stdout
        again = runner.invoke(main, ["db", "migrate", "--database-url", url], env=_env())
        assert "already current" in again.stdout
        check = runner.invoke(main, ["db", "check", "--database-url", url], env=_env())
        assert check.exit_code == 0 and "(current)" in check.stdout

    if engine == "sqlite":
        run(f"sqlite:///{tmp_path}/check.db")
    else:
        with fresh_mysql_url() as url:
            run(url)
    nowhere = CliRunner().invoke(
        main, ["db", "check", "--database-url", f"mysql://root@127.0.0.1:{free_port()}/x"], env=_env()
    )
    assert nowhere.exit_code == 3 and "Traceback" not in nowhere.output


def test_up_makes_a_token_that_the_admin_commands_find(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "imctl", "up", "--base-port", "0", "--gateways", "1"]
    command += ["--run-dir", str(run_dir), "--database-url", f"sqlite:///{tmp_path}/up.db"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMCLUSTER_")}
    env["PYTHONPATH"] = str(ROOT)
    with (tmp_path / "up.out").open("wb") as out:
        up = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    token_file = run_dir / "admin-token"
    try:
        deadline = time.monotonic() + 30
        while not (token_file.exists() and (run_dir / "admin-url").exists()):
            assert up.poll() is None and time.monotonic() < deadline, (tmp_path / "up.out").read_text()
            time.sleep(0.1)
        assert token_file.stat().st_mode & 0o777 == 0o600
        token = token_file.read_text().strip()
        assert len(token) >= 32
        login_pid = json.loads((run_dir / "login-1.ready").read_text())["pid"]
        assert token not in Path(f"/proc/{login_pid}/cmdline").read_text()  # not visible in ps

        # A cluster secret for this run, in a file every server is given the path of.
        secret_file = run_dir / "cluster-secret"
        assert secret_file.stat().st_mode & 0o777 == 0o600
        secret = secret_file.read_text().strip()
        assert len(secret) >= 32
        for ready in run_dir.glob("*.ready"):
            args = Path(f"/proc/{json.loads(ready.read_text())['pid']}/cmdline").read_text().split("\0")
            if ready.name.startswith("msfs-"):  # no internal links: clients only, over HTTP
                assert not any(arg.startswith("cluster.") for arg in args)
                continue
            assert f"cluster.secret_file={secret_file}" in args, ready.name
            assert secret not in "".join(args)

        # No --url, no --token: both come from the run dir.
        env_cli = _env(IMCLUSTER_IMCTL__RUN_DIR=str(run_dir))
        result = CliRunner().invoke(main, ["user", "add", "alice", "--password", "pw"], env=env_cli)
        assert result.exit_code == 0, result.output
        assert result.stdout.startswith("created user 'alice' (id ") and "directly" not in result.stderr
        assert "alice" in CliRunner().invoke(main, ["user", "list"], env=env_cli).stdout
        # While it runs, nothing writes its database behind its back.
        offline = CliRunner().invoke(
            main, ["user", "add", "bob", "--password", "pw", "--offline"], env=env_cli
        )
        assert offline.exit_code == 1 and "--offline refused: a cluster is running" in offline.stderr
        assert "bob" not in CliRunner().invoke(main, ["user", "list"], env=env_cli).stdout
        assert "token in" in (tmp_path / "up.out").read_text()
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(30)
    assert up.returncode == 0
    assert not token_file.exists()  # the token of a stopped cluster is not left behind
    assert not (run_dir / "cluster-secret").exists()  # nor its secret
