"""End-to-end fixtures: real server processes on real sockets.

Each cluster runs every server as its own process (``imctl run ...``) on
free ports (port 0, real ports read back from ready files), against SQLite
or against the MariaDB and Redis servers named by IMCLUSTER_TEST_MYSQL and
IMCLUSTER_TEST_REDIS. Its delivery log is the engine's: in process on
SQLite (the embedded default), Redis Streams on ``mysql+redis``, NATS
JetStream (IMCLUSTER_TEST_NATS) on ``mysql+nats``, each with names of its
own, deleted when the cluster stops. ``mysql+nats`` runs only the modules
that set ``EVERY_DELIVERY_LOG = True`` (delivery and faults), to keep the
suite short.

No server may log a traceback while the suite runs: a traceback is a bug,
whatever a client sent (bad client input gets an error reply). Each test
that uses a cluster fails if one appeared in a server log during it, and the
cluster's logs are checked once more when it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from common.pb import base_pb2
from db_proxy.passwords import hash_password, md5_hex
from db_proxy.storage import open_store
from imctl.cluster import SINGLE_DB, DbNode, LocalCluster, write_secret_file
from tests.support.databases import fresh_mysql_url
from tests.support.delivery_logs import fresh_delivery_log_url
from tests.support.ttclient import TTClient, discover

REDIS_URL = os.environ.get("IMCLUSTER_TEST_REDIS", "redis://127.0.0.1:6379/0")
PASSWORD = "secret"


TRACEBACK = "Traceback (most recent call last)"


@dataclass
class Cluster:
    local: LocalCluster
    database_url: str
    redis_url: str | None
    users: dict[str, int]
    # How much of each server log has been checked for tracebacks.
    checked: dict[Path, int] = field(default_factory=dict)

    def new_tracebacks(self) -> list[str]:
        """The log lines around each traceback written since the last call."""
        found = []
        for log_file in sorted(self.local.run_dir.glob("*.log")):
            with log_file.open("rb") as f:
                f.seek(self.checked.get(log_file, 0))
                text = f.read().decode(errors="replace")
                self.checked[log_file] = f.tell()
            lines = text.splitlines()
            for i, line in enumerate(lines):
                if TRACEBACK in line:
                    found.append(f"{log_file.name}:\n" + "\n".join(lines[max(0, i - 1) : i + 25]))
        return found

    def assert_no_tracebacks(self) -> None:
        found = self.new_tracebacks()
        if found:
            pytest.fail("a server logged a traceback:\n\n" + "\n\n".join(found), pytrace=False)

    @property
    def discovery_url(self) -> str:
        return f"http://127.0.0.1:{self.local.by_name('login-1').info['http_port']}/msg_server"

    def gateway_port(self, name: str) -> int:
        port = self.local.by_name(name).info["port"]
        assert isinstance(port, int)
        return port

    def gateway_of_port(self, port: int) -> str:
        return next(s.name for s in self.local.servers if s.kind == "msg" and s.info.get("port") == port)

    async def client(
        self,
        name: str,
        gateway: str | None = None,
        client_type: base_pb2.ClientType.ValueType = base_pb2.CLIENT_TYPE_WINDOWS,
    ) -> TTClient:
        """A logged-in client, on the named gateway or wherever discovery sends it."""
        if gateway is None:
            reply = await asyncio.to_thread(discover, self.discovery_url)
            assert reply["code"] == 0, reply
            port = int(reply["port"])
        else:
            port = self.gateway_port(gateway)
        client = TTClient()
        await client.connect("127.0.0.1", port)
        res = await client.login(name, PASSWORD, client_type)
        assert res.result_code == 0, res
        return client


async def create_users(database_url: str, names: list[str], bulk: list[str]) -> dict[str, int]:
    """``names`` get a real password hash; the ``bulk`` crowd a cheap one (load only)."""
    store = open_store(database_url)
    await store.open()
    try:
        await store.migrate()
        hashed = hash_password(md5_hex(PASSWORD))
        cheap = hash_password(md5_hex(PASSWORD), log2_n=4)
        users = {name: await store.create_user(name, hashed, nick=name.title()) for name in names}
        users.update({name: await store.create_user(name, cheap, nick=name) for name in bulk})
        return users
    finally:
        await store.close()


FAST_SENDER = {
    "msg_rate": "10000",
    "msg_burst": "100000",
    "user_msg_rate": "10000",
    "user_msg_burst": "100000",
    "request_rate": "10000",
    "request_burst": "100000",
    "profile_rate": "10000",  # the profile-notice tests change a sign info 1,000 times in a loop
    "profile_burst": "100000",
    "login_rate_per_source": "10000",  # every test client logs in from 127.0.0.1
    "login_burst_per_source": "100000",
}

USERS = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"]
CROWD = [f"member{i:02d}" for i in range(1, 51)]


def _start(
    tmp: Path,
    database_url: str,
    redis_url: str | None,
    delivery_log: str,
    routes: int = 1,
    tls: bool = False,
    files: bool = False,
    msg: dict[str, str] | None = None,
    default_limits: bool = False,
    db_layout: tuple[DbNode, ...] = SINGLE_DB,
    environ: dict[str, dict[str, str]] | None = None,
) -> Cluster:
    users = asyncio.run(create_users(database_url, USERS, CROWD))
    # As in production: every internal link proves the cluster secret.
    local = LocalCluster(
        tmp,
        None,
        gateways=2,
        base_port=0,
        database_url=database_url,
        redis_url=redis_url,
        delivery_log=delivery_log,
        routes=routes,
        secret_file=write_secret_file(tmp / "cluster.secret"),
        tls_dir=tmp / "tls" if tls else None,
        files=files,
        db_layout=db_layout,
        environ=environ or {},
    )
    # The delivery and fault tests send messages faster than a person (hundreds a second, waiting
    # for their acks): past the rate limits they would get no ack. Modules that test the limits
    # (DEFAULT_LIMITS = True: tests/e2e/test_abuse_limits.py) run at the defaults.
    fast_sender = {} if default_limits else FAST_SENDER
    local.extra = {"msg": {"request_timeout": "5", **fast_sender, **(msg or {})}}
    local.start()
    return Cluster(local, database_url, redis_url, users)


@contextlib.contextmanager
def running_cluster(
    engine: str,
    tmp: Path,
    routes: int = 1,
    tls: bool = False,
    files: bool = False,
    msg: dict[str, str] | None = None,
    default_limits: bool = False,
) -> Iterator[Cluster]:
    """A cluster on SQLite or on a fresh MariaDB database with Redis, stopped afterwards;
    ``msg``: gateway settings that differ from the shared clusters'."""
    with contextlib.ExitStack() as stack:
        if engine == "sqlite":
            started = _start(
                tmp, f"sqlite:///{tmp}/im.db", None, "memory://", routes, tls, files, msg, default_limits
            )
        else:
            backend = engine.removeprefix("mysql+")
            log_url = stack.enter_context(fresh_delivery_log_url(backend))
            mysql_url = stack.enter_context(fresh_mysql_url())
            started = _start(tmp, mysql_url, REDIS_URL, log_url, routes, tls, files, msg, default_limits)
        stack.callback(started.local.stop)
        yield started
        started.local.stop()
        started.assert_no_tracebacks()


#: The split layout's db_proxies and their roles (common/db_roles.py).
SPLIT_ROLES = {"db-login": ("login", "directory", "admin"), "db-msg": ("messages",)}
ADMIN_TOKEN = "e2e-admin-token"


@contextlib.contextmanager
def running_split_cluster(tmp: Path, msg: dict[str, str] | None = None) -> Iterator[Cluster]:
    """A cluster on MariaDB + Redis whose db_proxies split the roles: ``db-login``
    (login, directory, admin) and ``db-msg`` (messages), on two fresh databases, the
    directory's and the messages'; both processes get both URLs. The login_server's
    admin API is on (``ADMIN_TOKEN``)."""
    with contextlib.ExitStack() as stack:
        log_url = stack.enter_context(fresh_delivery_log_url("redis"))
        directory_url = stack.enter_context(fresh_mysql_url())
        messages_url = stack.enter_context(fresh_mysql_url())
        layout = tuple(
            DbNode(name, roles, directory_url, messages_url) for name, roles in SPLIT_ROLES.items()
        )
        started = _start(
            tmp,
            directory_url,  # the users are made there (and database_url is the fallback of both)
            REDIS_URL,
            log_url,
            msg=msg,
            db_layout=layout,
            environ={"login": {"IMCLUSTER_LOGIN_SERVER__ADMIN_TOKEN": ADMIN_TOKEN}},
        )
        stack.callback(started.local.stop)
        yield started
        started.local.stop()
        started.assert_no_tracebacks()


ENGINES = ["sqlite", "mysql+redis", "mysql+nats"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``mysql+nats`` only where a module asks for every delivery log (see the docstring)."""
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_nats = callspec is not None and "mysql+nats" in callspec.id.split("-")
        wanted = getattr(getattr(item, "module", None), "EVERY_DELIVERY_LOG", False)
        (dropped if on_nats and not wanted else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture(scope="module", params=ENGINES)
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One cluster per test module and engine, shared by its tests; with file_server and msfs
    only for modules that set ``FILES = True``; at msg_server's default rate limits only for
    modules that set ``DEFAULT_LIMITS = True`` (the others send faster than a person)."""
    files = getattr(request.module, "FILES", False)
    default_limits = getattr(request.module, "DEFAULT_LIMITS", False)
    tmp = tmp_path_factory.mktemp("cluster")
    with running_cluster(request.param, tmp, files=files, default_limits=default_limits) as started:
        yield started


@pytest.fixture(autouse=True)
def no_server_tracebacks(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test during which a server of its cluster logged a traceback."""
    yield
    for value in request.node.funcargs.values():
        if isinstance(value, Cluster):
            value.assert_no_tracebacks()
