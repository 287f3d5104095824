"""A db_proxy restart keeps the verified-password cache: a returning user's login runs no scrypt.

The cache's key is derived from the cluster secret and its entries live in
Redis (db_proxy/cache.py), so the restarted process finds the entry the
first one wrote. Counted by imcluster_db_login_cache_total on the new
process: a hit skips scrypt, a miss runs it.
"""

from __future__ import annotations

import asyncio
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from imctl.cluster import ServerProcess
from tests.e2e.conftest import PASSWORD, Cluster, running_cluster
from tests.support.ttclient import TTClient


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A cluster of its own on MariaDB and Redis (the cache is only shared through Redis)."""
    with running_cluster("mysql+redis", tmp_path) as started:
        yield started


def cache_lookups(cluster: Cluster, outcome: str) -> float:
    port = cluster.local.by_name("db-1").info["metrics_port"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    found = re.search(rf'^imcluster_db_login_cache_total{{outcome="{outcome}"}} (\S+)$', text, re.MULTILINE)
    assert found, f"no imcluster_db_login_cache_total{{outcome={outcome!r}}}"
    return float(found.group(1))


def restart(cluster: Cluster, server: ServerProcess) -> None:
    """Stop it and start it again on the same port (the gateways relink to it)."""
    server.stop(10)
    server.overrides["port"] = str(server.info["port"])
    server.start(cluster.local.config_path)
    assert server.wait_ready(30), server.log_file.read_text()[-2000:]


async def login_code(cluster: Cluster, name: str) -> int:
    client = TTClient()
    await client.connect("127.0.0.1", cluster.gateway_port("msg-1"))
    try:
        return (await client.login(name, PASSWORD)).result_code
    finally:
        await client.close()


async def login_once_linked(cluster: Cluster, name: str) -> None:
    """Log in, retrying while the gateway has not yet relinked to the restarted db_proxy."""
    async with asyncio.timeout(20):
        while await login_code(cluster, name) != 0:
            await asyncio.sleep(0.2)


async def test_returning_user_logs_in_without_scrypt_after_a_db_proxy_restart(redis_cluster: Cluster) -> None:
    cluster = redis_cluster
    assert await login_code(cluster, "alice") == 0
    assert cache_lookups(cluster, "miss") >= 1  # her first login paid for scrypt, and was remembered
    restart(cluster, cluster.local.by_name("db-1"))
    await login_once_linked(cluster, "alice")
    # The new process: alice's login matched the entry the old one wrote.
    assert cache_lookups(cluster, "hit") == 1
    assert cache_lookups(cluster, "miss") == 0
    assert await login_code(cluster, "bob") == 0  # never logged in: the cache cannot know him
    assert cache_lookups(cluster, "miss") == 1
