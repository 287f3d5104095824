"""scripts/schema-mysql.sql builds a database the store accepts as current."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from db_proxy.storage import open_store
from tests.support.databases import fresh_mysql_url

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.mysql
async def test_schema_file_applies_and_is_current() -> None:
    async with fresh_mysql_url() as url:
        parts = urlsplit(url)
        args = [
            "mysql",
            f"--host={parts.hostname}",
            f"--port={parts.port or 3306}",
            f"--user={parts.username}",
        ]
        if parts.password:
            args.append(f"--password={parts.password}")
        sql = (ROOT / "scripts" / "schema-mysql.sql").read_text()
        command = [*args, parts.path.lstrip("/")]
        await asyncio.to_thread(subprocess.run, command, input=sql, text=True, check=True, timeout=60)
        store = open_store(url)
        await store.open()
        try:
            from db_proxy.storage.schema import LATEST_VERSION

            assert await store.migrate() == LATEST_VERSION  # nothing left to apply
            user_id = await store.create_user("sqlfile", "x")
            assert user_id > 0
        finally:
            await store.close()
