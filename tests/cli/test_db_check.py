"""`imctl db check` changes nothing it checks (a SQLite file is opened
read-only), reports each check (--json: as one object), and no message of
imctl shows a database password; `imctl config --json`."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from common.config import redact_urls
from db_proxy.storage.schema import LATEST_VERSION
from imctl.cli import main
from tests.cli.conftest import free_port
from tests.cli.test_local import _env
from tests.support.databases import fresh_mysql_url


def imctl(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), env=_env())
    assert "Traceback" not in result.output
    return result.exit_code, result.stdout, result.stderr


def test_a_missing_sqlite_file_is_reported_not_made(tmp_path: Path) -> None:
    path = tmp_path / "not" / "yet" / "im.db"
    code, out, _ = imctl("db", "check", "--database-url", f"sqlite:///{path}")
    assert code == 1 and f"{path} does not exist" in out
    assert not (tmp_path / "not").exists()  # neither the file nor its directories
    code, out, _ = imctl("db", "check", "--json", "--database-url", f"sqlite:///{path}")
    report = json.loads(out)
    assert code == 1 and report["ok"] is False and report["version"] is None
    assert report["checks"] == [
        {"name": "exists", "ok": False, "detail": f"{path} does not exist (imctl db init creates it)"}
    ]
    assert not (tmp_path / "not").exists()


def test_an_existing_sqlite_file_is_only_read(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/im.db"
    assert imctl("db", "init", "--database-url", url)[0] == 0
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    code, out, _ = imctl("--json", "db", "check", "--database-url", url)  # --json before the command too
    report = json.loads(out)
    assert code == 0 and report["ok"] and (report["version"], report["expected"]) == (LATEST_VERSION,) * 2
    assert [c["name"] for c in report["checks"]] == ["exists", "reachable", "schema"]
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before  # no -wal, -shm, nothing
    # While a db_proxy has it open (its write-ahead log beside it), it is read all the same.
    with sqlite3.connect(tmp_path / "im.db") as writer:
        writer.execute("PRAGMA journal_mode=WAL")
        writer.execute("UPDATE schema_version SET version = version")
        assert (tmp_path / "im.db-wal").exists()
        code, out, _ = imctl("db", "check", "--database-url", url)
        assert code == 0 and "(current)" in out


@pytest.mark.mysql
def test_mysql_databases_missing_empty_and_current() -> None:
    with fresh_mysql_url() as url:
        code, out, _ = imctl("db", "check", "--json", "--database-url", url)
        report = json.loads(out)
        assert code == 1 and report["version"] == 0 and not report["ok"]
        assert "run: imctl db migrate" in report["checks"][-1]["detail"]
        assert imctl("db", "migrate", "--database-url", url)[0] == 0
        code, out, _ = imctl("db", "check", "--database-url", url)
        assert code == 0 and "(current)" in out
        missing = url.rsplit("/", 1)[0] + "/imcluster_h6_never_made"
        code, out, _ = imctl("db", "check", "--database-url", missing)
        assert code == 1 and "does not exist" in out


def test_passwords_are_redacted_in_every_message() -> None:
    url = f"mysql://admin:hunter2@127.0.0.1:{free_port()}/im"
    for args in (
        ["db", "check", "--database-url", url],
        ["db", "check", "--json", "--database-url", url],
        ["db", "migrate", "--database-url", url],
        ["db", "init", "--database-url", url],
        ["db", "check", "--database-url", "mysql://admin:hunter2@/"],  # not even a valid URL
    ):
        code, out, err = imctl(*args)
        assert code in (2, 3), (args, out, err)
        assert "hunter2" not in out + err and "admin:***@" in out + err, (args, out, err)
    assert redact_urls("a redis://:pw@h:6379/0, nats://u:p@n:4222 and mysql://root@h/x") == (
        "a redis://:***@h:6379/0, nats://u:***@n:4222 and mysql://root@h/x"
    )


def test_config_reference_as_json() -> None:
    for args in (["config", "--json"], ["--json", "config"]):
        code, out, _ = imctl(*args)
        reference = json.loads(out)
        assert code == 0 and {"msg_server", "db_proxy", "cluster", "imctl"} <= set(reference)
        port = next(s for s in reference["msg_server"] if s["key"] == "port")
        assert set(port) == {"key", "type", "default", "doc"} and port["type"] == "int"
    code, out, _ = imctl("config", "cluster", "--json")
    assert code == 0 and list(json.loads(out)) == ["cluster"]
