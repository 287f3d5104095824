"""`imctl user add` writes the database only with --offline, and never while a cluster runs.

(With a real `imctl up` running, --offline is refused too: test_local.py.)
"""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from db_proxy.storage import open_store
from imctl.cli import main
from tests.cli.conftest import free_port


@dataclass
class Setup:
    """A config naming a SQLite database and a run directory, and an admin URL nothing listens at."""

    config: Path
    database: str
    run_dir: Path
    url: str

    def add(self, name: str, *extra: str, url: str | None = None) -> Result:
        args = ["user", "add", name, "--password", "pw", "--config", str(self.config), *extra]
        clean: dict[str, str | None] = {k: None for k in os.environ if k.startswith("IMCLUSTER_")}
        return CliRunner().invoke(main, [*args, "--url", url or self.url], env=clean)

    def names(self) -> list[str]:
        async def read() -> list[str]:
            async with open_store(self.database) as store:
                await store.migrate()
                return [u.name for u in await store.users_updated_since(0)]

        return asyncio.run(read())


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    database = f"sqlite:///{tmp_path}/offline.db"
    config = tmp_path / "imcluster.toml"
    config.write_text(f'[db_proxy]\ndatabase_url = "{database}"\n\n[imctl]\nrun_dir = "{run_dir}"\n')
    return Setup(config, database, run_dir, f"http://127.0.0.1:{free_port()}")


def assert_clean_failure(result: Result, exit_code: int) -> None:
    assert result.exit_code == exit_code, result.output
    assert isinstance(result.exception, SystemExit)  # a one-line error, not a crash
    assert "Traceback" not in result.output


def test_offline_with_no_cluster_writes_the_database(setup: Setup) -> None:
    result = setup.add("zed", "--offline", "--nick", "Zed", "--email", "zed@example.com", "--tel", "123")
    assert result.exit_code == 0, result.output
    assert "created user 'zed'" in result.stdout and "(offline)" in result.stdout
    assert setup.names() == ["zed"]

    async def profile() -> tuple[str, str, str]:
        async with open_store(setup.database) as store:
            user = await store.user_by_name("zed")
            assert user is not None
            return user.nick, user.email, user.tel

    assert asyncio.run(profile()) == ("Zed", "zed@example.com", "123")  # the profile too, as online
    assert_clean_failure(setup.add("zed", "--offline"), 1)  # taken


def test_without_offline_and_no_cluster_it_fails_and_says_what_to_do(setup: Setup) -> None:
    result = setup.add("zed")
    assert_clean_failure(result, 3)
    assert "start the cluster (imctl up)" in result.stderr and "--offline" in result.stderr
    assert setup.names() == []  # no silent fallback to the database


def test_database_url_needs_offline(setup: Setup) -> None:
    result = setup.add("zed", "--database-url", setup.database)
    assert_clean_failure(result, 2)
    assert "needs --offline" in result.stderr
    assert setup.names() == []


def test_offline_is_refused_while_a_servers_ready_file_names_a_live_process(setup: Setup) -> None:
    # This test's own process stands in for a server that is listening.
    (setup.run_dir / "db-1.ready").write_text(json.dumps({"pid": os.getpid(), "port": 1}))
    result = setup.add("zed", "--offline")
    assert_clean_failure(result, 1)
    assert f"a cluster is running (db-1 (pid {os.getpid()})" in result.stderr
    assert setup.names() == []


def test_ready_files_of_dead_servers_do_not_block_offline(setup: Setup) -> None:
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True
    )
    (setup.run_dir / "db-1.ready").write_text(json.dumps({"pid": int(gone.stdout)}))
    (setup.run_dir / "msg-1.ready").write_text("not json")  # not one of ours
    result = setup.add("zed", "--offline")
    assert result.exit_code == 0, result.output
    assert setup.names() == ["zed"]


class _Refusing(http.server.BaseHTTPRequestHandler):
    """An admin API that wants a token: still a running cluster."""

    def do_GET(self) -> None:
        self.send_response(401)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def answering_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_offline_is_refused_when_something_answers_at_the_admin_url(setup: Setup, answering_url: str) -> None:
    result = setup.add("zed", "--offline", url=answering_url)
    assert_clean_failure(result, 1)
    assert f"a cluster answers at {answering_url}" in result.stderr
    assert setup.names() == []
