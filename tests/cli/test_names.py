"""`imctl db init` and `imctl user add --offline` straight into a database (no
cluster): the user has the names and the department TeamTalk clients need."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from db_proxy.handlers.replies import user_info
from db_proxy.storage import open_store
from db_proxy.storage.schema import DEFAULT_DEPARTMENT
from imctl.cli import main
from tests.cli.conftest import free_port
from tests.support.databases import fresh_mysql_url


def _env(run_dir: Path) -> dict[str, str | None]:
    """No cluster anywhere: an empty run directory, an admin URL nothing listens at."""
    clean: dict[str, str | None] = {k: None for k in os.environ if k.startswith("IMCLUSTER_")}
    return {
        **clean,
        "IMCLUSTER_IMCTL__RUN_DIR": str(run_dir),
        "IMCLUSTER_URL": f"http://127.0.0.1:{free_port()}",
    }


async def _seen_by_a_client(url: str) -> list[tuple[str, str, str, bool]]:
    """(real name, nick, domain, department listed) of each user, as db_proxy answers a client."""
    async with open_store(url) as store:
        listed = {d.id for d in await store.departments_updated_since(0) if not d.deleted}
        names = {d.name for d in await store.departments()}
        assert DEFAULT_DEPARTMENT in names
        infos = [user_info(u) for u in await store.users_updated_since(0)]
    return [(i.user_real_name, i.user_nick_name, i.user_domain, i.department_id in listed) for i in infos]


@pytest.mark.parametrize("engine", ["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
def test_user_add_without_a_cluster(engine: str, tmp_path: Path) -> None:
    def run(url: str) -> None:
        runner = CliRunner()
        env = _env(tmp_path)
        init = runner.invoke(main, ["db", "init", "--database-url", url], env=env)
        assert init.exit_code == 0, init.output
        for args in (["alice"], ["zhangsan", "--nick", "张三"]):
            added = runner.invoke(
                main, ["user", "add", *args, "--password", "pw", "--offline", "--database-url", url], env=env
            )
            assert added.exit_code == 0, added.output
        assert asyncio.run(_seen_by_a_client(url)) == [
            ("alice", "alice", "alice", True),
            ("zhangsan", "张三", "zhangsan", True),
        ]

    if engine == "sqlite":
        run(f"sqlite:///{tmp_path}/names.db")
    else:
        with fresh_mysql_url() as url:
            run(url)
