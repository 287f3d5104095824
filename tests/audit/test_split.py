"""Export and retention where the roles and databases are split (MariaDB + Redis):
names come from the directory database, messages from the messages one, and the
admin db_proxy (login, directory, admin) runs retention on the messages database."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.teamtalk_text import encode_text
from db_proxy.storage import open_store
from db_proxy.storage.model import SESSION_SINGLE, NewMessage
from tests.e2e.conftest import ADMIN_TOKEN, Cluster, running_split_cluster

pytestmark = pytest.mark.mysql
DAY = 86400


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    # Both db_proxies inherit it (the servers' environment is the test's).
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("IMCLUSTER_DB_PROXY__RETENTION_SINGLE_DAYS", "30")
        with running_split_cluster(tmp_path_factory.mktemp("split-audit")) as started:
            yield started


def get(cluster: Cluster, path: str, method: str = "GET", **query: str) -> bytes:
    port = cluster.local.by_name("login-1").info["http_port"]
    url = f"http://127.0.0.1:{port}/admin/v1{path}?{urllib.parse.urlencode(query)}"
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    request = urllib.request.Request(
        url, headers=headers, method=method, data=b"" if method == "POST" else None
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return bytes(response.read())


async def test_export_and_retention_across_split_databases(split: Cluster, tmp_path: Path) -> None:
    messages_url = split.local.db_layout[0].messages_database_url
    assert messages_url and messages_url != split.database_url
    alice, bob = split.users["alice"], split.users["bob"]
    now = int(time.time())
    async with open_store(messages_url) as store:
        await store.save_messages(
            [
                NewMessage(alice, SESSION_SINGLE, bob, 1, encode_text(f"m{i}"), now - 40 * DAY + i)
                for i in range(3)
            ]
            + [NewMessage(bob, SESSION_SINGLE, alice, 1, encode_text("recent"), now)]
        )
    lines = [json.loads(line) for line in get(split, "/messages/export", user="alice").splitlines()]
    assert [m["text"] for m in lines] == ["m0", "m1", "m2", "recent"]
    assert lines[-1]["from"] == {"id": bob, "name": "bob"}
    policy = json.loads(get(split, "/retention"))
    assert policy["node_id"] == "db-login" and policy["policy"]["single_days"] == 30
    result = json.loads(get(split, "/retention/run", method="POST"))
    assert result["deleted"]["single"] == 3
    left = [json.loads(line) for line in get(split, "/messages/export", a="bob", b="alice").splitlines()]
    assert [m["text"] for m in left] == ["recent"]
