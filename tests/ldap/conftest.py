"""A slapd of the test's own (tests/ldap/slapd.py) and a cluster with the admin API on,
on SQLite or on MariaDB + Redis; imctl run in-process with click's CliRunner.

The cluster is shared by a module's tests (starting it is most of the cost);
each test gets a fresh slapd with the directory below, so what one test
changes in LDAP is gone for the next.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from imctl.cli import main
from imctl.cluster import LocalCluster
from tests.ldap import slapd
from tests.support.databases import fresh_mysql_url

REDIS_URL = os.environ.get("IMCLUSTER_TEST_REDIS", "redis://127.0.0.1:6379/0")
TOKEN = "ldap-test-token-0123456789"
BIND_DN = f"cn=sync,{slapd.SUFFIX}"
BIND_PASSWORD = "sync-reader-secret"
PEOPLE = f"ou=people,{slapd.SUFFIX}"
DEV = f"ou=dev,ou=eng,{PEOPLE}"
ENG = f"ou=eng,{PEOPLE}"
SALES = f"ou=sales,{PEOPLE}"
LOCKED = "000001010000Z"  # ppolicy: locked until an administrator unlocks it

DIRECTORY = "\n".join(
    [
        slapd.entry(slapd.SUFFIX, objectClass=["dcObject", "organization"], o="Example", dc="example"),
        # The account sync binds as (any DN with a password; not the root DN).
        slapd.entry(
            BIND_DN,
            objectClass=["person", "simpleSecurityObject"],
            cn="sync",
            sn="sync",
            userPassword=BIND_PASSWORD,
        ),
        slapd.entry(PEOPLE, objectClass="organizationalUnit", ou="people"),
        slapd.entry(ENG, objectClass="organizationalUnit", ou="eng"),
        slapd.entry(DEV, objectClass="organizationalUnit", ou="dev"),
        slapd.entry(SALES, objectClass="organizationalUnit", ou="sales"),
        slapd.person(
            "ann", DEV, "Ann Archer", displayName="Ann", mail="ann@example.com", telephoneNumber="+1 555 0101"
        ),
        slapd.person("bob", DEV, "Bob Baker", displayName="Bobby", mail="bob@example.com"),
        slapd.person("carol", ENG, "Carol Cole", displayName="Carol", mail="carol@example.com"),
        slapd.person("dave", SALES, "Dave Dunn", displayName="Dave", pwdAccountLockedTime=LOCKED),
        slapd.person("erin", SALES, "Erin Eve", displayName="Erin", mail="erin@example.com"),
        slapd.person("frank", PEOPLE, "Frank Fox", telephoneNumber="+1 555 0106"),
    ]
)


@dataclass
class SyncCluster:
    local: LocalCluster
    database_url: str
    tmp: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.local.by_name('login-1').info['http_port']}"

    def env(self, **extra: str) -> dict[str, str | None]:
        clean: dict[str, str | None] = {k: None for k in os.environ if k.startswith("IMCLUSTER_")}
        return {**clean, "IMCLUSTER_IMCTL__RUN_DIR": str(self.tmp / "imctl-run"), **extra}

    def imctl(self, *args: str, config: Path | None = None, **env: str) -> Result:
        prefix = ["--url", self.url, "--token", TOKEN]
        if config is not None:
            prefix += ["--config", str(config)]
        return CliRunner().invoke(main, [*prefix, *args], env=self.env(**env))

    def json(self, *args: str, config: Path | None = None) -> Any:
        result = self.imctl("--json", *args, config=config)
        assert result.exit_code == 0, (args, result.output, result.exception)
        return json.loads(result.stdout)

    def users(self) -> dict[str, dict[str, Any]]:
        return {u["name"]: u for u in self.json("user", "list")["users"]}

    def departments(self) -> dict[int, dict[str, Any]]:
        return {d["id"]: d for d in self.json("dept", "list")["departments"]}

    def department_path(self, dept_id: int) -> str:
        departments = self.departments()
        names = []
        for _ in range(len(departments)):
            if not dept_id:
                break
            names.append(departments[dept_id]["name"])
            dept_id = departments[dept_id]["parent_id"]
        return "/".join(reversed(names))

    def gateway_port(self) -> int:
        port = self.local.by_name("msg-1").info["port"]
        assert isinstance(port, int)
        return port


ENGINES = ["sqlite", pytest.param("mysql+redis", marks=[pytest.mark.mysql, pytest.mark.redis])]


@pytest.fixture(scope="module", params=ENGINES)
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SyncCluster]:
    tmp = tmp_path_factory.mktemp("ldap-cluster")
    (tmp / "imctl-run").mkdir()

    def run(database_url: str, redis_url: str | None) -> Iterator[SyncCluster]:
        local = LocalCluster(
            tmp, None, gateways=1, base_port=0, database_url=database_url, redis_url=redis_url, files=False
        )
        local.extra = {
            "login": {"admin_token": TOKEN},
            "db": {"password_log2_n": "10"},
            "msg": {"request_timeout": "5"},
        }
        local.start()
        try:
            yield SyncCluster(local, database_url, tmp)
        finally:
            local.stop()

    if request.param == "sqlite":
        yield from run(f"sqlite:///{tmp}/im.db", None)
    else:
        with fresh_mysql_url() as url:
            yield from run(url, REDIS_URL)


@pytest.fixture
def directory(tmp_path: Path) -> Iterator[slapd.Slapd]:
    if not slapd.available():
        pytest.skip("Debian's slapd is not installed")
    server = slapd.start(tmp_path / "slapd", DIRECTORY)
    try:
        yield server
    finally:
        server.stop()


def write_config(path: Path, server: slapd.Slapd, **settings: str | int | bool) -> Path:
    """An imcluster.toml with an [ldap] table for ``server``; the password in a file next to it."""
    password_file = path.parent / "ldap-password"
    password_file.write_text(BIND_PASSWORD + "\n")
    values: dict[str, str | int | bool] = {
        "url": server.url,
        "bind_dn": BIND_DN,
        "bind_password_file": str(password_file),
        "base_dn": PEOPLE,
        **settings,
    }
    lines = ["[ldap]"] + [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path
