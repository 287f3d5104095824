"""A live cluster with the admin API on (MariaDB + Redis), and imctl run
in-process with click's CliRunner against it.

Module scope: starting the five processes is most of the cost. The
db_proxy hashes at scrypt cost 2^10 so that importing 1,000 users is quick.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from imctl.cli import main
from imctl.cluster import LocalCluster
from tests.support.databases import fresh_mysql_url
from tests.support.ttclient import TTClient

REDIS_URL = os.environ.get("IMCLUSTER_TEST_REDIS", "redis://127.0.0.1:6379/0")
TOKEN = "cli-test-token-0123456789"
PASSWORD = "secret"
BASE_USERS = ["alice", "bob", "carol", "dave"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class AdminCluster:
    local: LocalCluster
    database_url: str
    run_dir: Path  # an empty run dir: no admin-token or admin-url file to find
    users: dict[str, int]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.local.by_name('login-1').info['http_port']}"

    def env(self, **extra: str) -> dict[str, str | None]:
        """An environment that points imctl nowhere but where the test says."""
        clean: dict[str, str | None] = {k: None for k in os.environ if k.startswith("IMCLUSTER_")}
        return {**clean, "IMCLUSTER_CONFIG": None, "IMCLUSTER_IMCTL__RUN_DIR": str(self.run_dir), **extra}

    def imctl(
        self, *args: str, token: str | None = TOKEN, url: str | None = None, input: str | None = None
    ) -> Result:
        """``imctl --url URL --token TOKEN ARGS...`` in-process."""
        prefix = ["--url", url or self.url]
        if token is not None:
            prefix += ["--token", token]
        return CliRunner().invoke(main, [*prefix, *args], env=self.env(), input=input)

    def ok(self, *args: str) -> str:
        result = self.imctl(*args)
        assert result.exit_code == 0, (args, result.output, result.exception)
        return result.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok("--json", *args))

    async def ajson(self, *args: str) -> Any:
        """``json`` off the event loop, so that clients keep reading meanwhile."""
        return await asyncio.to_thread(self.json, *args)

    async def aimctl(self, *args: str) -> Result:
        return await asyncio.to_thread(self.imctl, *args)

    def gateway_port(self, name: str) -> int:
        port = self.local.by_name(name).info["port"]
        assert isinstance(port, int)
        return port

    async def client(self, name: str, gateway: str = "msg-1", password: str = PASSWORD) -> TTClient:
        client = TTClient()
        await client.connect("127.0.0.1", self.gateway_port(gateway))
        res = await client.login(name, password)
        assert res.result_code == 0, res
        return client


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AdminCluster]:
    tmp = tmp_path_factory.mktemp("admin-cluster")
    empty_run_dir = tmp / "imctl-run"
    empty_run_dir.mkdir()
    with fresh_mysql_url() as url:
        local = LocalCluster(
            tmp, None, gateways=2, base_port=0, database_url=url, redis_url=REDIS_URL, files=False
        )
        local.extra = {
            "login": {"admin_token": TOKEN},
            "db": {"password_log2_n": "10"},
            "msg": {"request_timeout": "5", "load_report_interval": "0.5"},
        }
        local.start()
        try:
            started = AdminCluster(local, url, empty_run_dir, {})
            for name in BASE_USERS:
                created = started.json("user", "add", name, "--password", PASSWORD, "--nick", name.title())
                started.users[name] = created["user"]["id"]
            yield started
        finally:
            local.stop()
