"""The multi-host test bed: the cluster spread over seven namespaces.

One bed per test session (starting it costs a few seconds): MariaDB,
Redis and NATS (JetStream) on ``db``, a login_server and a route_server on each of
``login-route-1`` and ``-2``, a msg_server on ``gw-1`` and ``gw-2``, a
db_proxy on ``dbp-1`` and ``dbp-2``. Every server is ``imctl run`` with
``scripts/examples/multihost.toml`` (only ``secret_file`` points at the
bed's own secret) and exactly the per-host ``--set`` its comments show.
Skipped, with the reason, where namespaces cannot be made (not root).

The delivery log backend is a session-scoped parameter (``backend``):
switching it restarts the two db_proxies with ``--set delivery_log=...``,
which is quicker than a second bed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from common.pb import base_pb2
from db_proxy.config import DbProxyConfig
from db_proxy.passwords import hash_password, md5_hex
from db_proxy.storage import open_store
from imctl.cluster import write_secret_file
from tests.e2e.conftest import PASSWORD
from tests.multihost.client import Connect
from tests.multihost.netns import Bed, Process, unavailable, wait_for
from tests.multihost.traffic import Plan, group_users, pair_users
from tests.support.examples import run_commands
from tests.support.ttclient import TTClient, discover

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "scripts" / "examples" / "multihost.toml"
EXAMPLE_SECRET = "/etc/imcluster/secret"
HOSTS = ["db", "login-route-1", "login-route-2", "gw-1", "gw-2", "dbp-1", "dbp-2"]
USERS = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"]
PLAN = Plan()  # the traffic every scenario runs
READY_TIMEOUT = 30.0
CONNECT_TIMEOUT = 5.0  # discovery, TCP and login of one client: a cut host answers nothing
START_ORDER = ["route", "db", "login", "msg"]
#: The delivery log of each backend the scenarios run on (``--set delivery_log=`` of db_proxy).
BACKENDS = {
    "redis": "redis://{db}:6379/0?partitions=16",
    "nats": "nats://{db}:4222?partitions=16&ack_wait=5",
}
DELIVERY_LOG_LINE = re.compile(r"^delivery_log = .*$", re.M)
#: The counters a scenario prints the change of (where pushes are redelivered, dropped, filled).
PUSH_METRICS = (
    "imcluster_push_",
    "imcluster_delivery_",
    "imcluster_route_pushes",
    "imcluster_gateway_pushes",
    "imcluster_gateway_gaps",
    "imcluster_gateway_clients_closed",
    "imcluster_db_pushes",
)


def _log_independent_on_nats(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    if callspec is None or callspec.params.get("backend") != "nats":
        return False
    fault = callspec.params.get("fault")
    return getattr(fault, "name", None) in LOG_INDEPENDENT


def has_delivery_log() -> bool:
    """Whether this branch's db_proxy has the delivery log (issue 8, helper A's i8-db)."""
    return "delivery_log" in DbProxyConfig.__dataclass_fields__


#: Faults of hosts the delivery log's client does not run on (route servers, gateways), for more
#: than a kill: they exercise the same log calls on either backend, so JetStream skips them (the
#: suite stays under 15 minutes). Every db_proxy, database and kill scenario runs on both.
LOG_INDEPENDENT = frozenset(
    {"sigstop-login-route", "cut10-login-route", "cut30-login-route", "sigstop-gateway", "cut10-gateway"}
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    dropped = [item for item in items if _log_independent_on_nats(item)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if item not in dropped]
    reason = unavailable()
    for program in ("mariadbd", "mariadb-install-db", "mariadb", "redis-server", "redis-cli"):
        reason = reason or (None if shutil.which(program) else f"needs {program}")
    if reason is None:
        return
    for item in items:
        if item.nodeid.startswith("tests/multihost/"):
            item.add_marker(pytest.mark.skip(reason=f"multi-host test bed: {reason}"))


@dataclass
class Server:
    kind: str  # login, route, msg, db (imctl run's names)
    host: str
    node_id: str
    overrides: dict[str, str]
    ready_file: Path
    process: Process | None = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class MultiHost:
    bed: Bed
    config: Path
    users: dict[str, int] = field(default_factory=dict)
    group_id: int = 0
    servers: dict[str, Server] = field(default_factory=dict)  # by node_id
    backend: str = "redis"

    # -- starting -------------------------------------------------------------------

    def start_databases(self) -> None:
        run = self.bed.run_dir
        data, address = run / "mariadb", self.bed.address("db")
        init = subprocess.run(
            [
                "mariadb-install-db",
                "--no-defaults",
                f"--datadir={data}",
                "--user=root",
                "--skip-test-db",
                "--auth-root-authentication-method=normal",
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        if init.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed: {init.stderr[-2000:]}")
        mariadb = self.bed.run(
            "db",
            "mariadb",
            [
                "mariadbd",
                "--no-defaults",
                f"--datadir={data}",
                "--user=root",
                f"--bind-address={address}",
                "--port=3306",
                f"--socket={run}/mariadb.sock",
                f"--pid-file={run}/mariadb.pid",
                "--skip-grant-tables",  # the bed's own server: root from any address, no password
                "--skip-name-resolve",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=64M",
            ],
        )
        self.bed.run(
            "db",
            "redis",
            [
                "redis-server",
                *("--bind", address, "--port", "6379", "--save", "", "--appendonly", "no"),
                *("--protected-mode", "no"),  # reached from the bed's own hosts only
            ],
        )

        nats = self.bed.run(
            "db",
            "nats",
            ["nats-server", "-js", "-a", address, "-p", "4222", "-sd", str(run / "nats"), "-n", "bed-nats"],
        )

        def answers() -> bool:
            if not mariadb.running():
                raise RuntimeError(f"mariadbd exited:\n{mariadb.log_tail()}")
            return self.sql("CREATE DATABASE IF NOT EXISTS imcluster", check=False) is not None

        wait_for(answers, READY_TIMEOUT, "MariaDB on the db host")
        wait_for(
            lambda: self.bed.exec("db", ["redis-cli", "-h", address, "ping"]).stdout.strip() == "PONG",
            READY_TIMEOUT,
            "Redis on the db host",
        )

        def nats_ready() -> bool:
            if not nats.running():
                raise RuntimeError(f"nats-server exited:\n{nats.log_tail()}")
            with contextlib.suppress(OSError), socket.create_connection((address, 4222), timeout=1) as sock:
                return sock.recv(4).startswith(b"INFO")
            return False

        wait_for(nats_ready, READY_TIMEOUT, "NATS on the db host")

    def sql(self, statement: str, check: bool = True) -> list[list[str]] | None:
        """Rows of a statement run on the bed's MariaDB (from the root namespace, over the bridge)."""
        done = subprocess.run(
            ["mariadb", "--no-defaults", "-uroot", "-h", self.bed.address("db"), "-N", "-B", "-e", statement],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        if done.returncode != 0:
            if check:
                raise RuntimeError(f"{statement}: {done.stderr.strip()}")
            return None
        return [line.split("\t") for line in done.stdout.splitlines()]

    @property
    def database_url(self) -> str:
        return f"mysql://root@{self.bed.address('db')}:3306/imcluster"

    def add(self, kind: str, overrides: dict[str, str]) -> Server:
        """A server as the example's comments start it; its host is the one with its address."""
        address = overrides.get("host") or overrides.get("gateway_host") or overrides["advertise_ip"]
        host = next(h.name for h in self.bed.hosts.values() if h.address == address)
        node_id = overrides["node_id"]
        server = Server(kind, host, node_id, overrides, self.bed.run_dir / f"{node_id}.ready")
        self.servers[node_id] = server
        return server

    def start(self, server: Server) -> None:
        wait_for(self.spawn(server), READY_TIMEOUT, f"{server.node_id} ready")
        server.info = json.loads(server.ready_file.read_text())

    async def start_async(self, server: Server) -> None:
        """:meth:`start` without blocking the event loop (the traffic goes on meanwhile)."""
        ready = self.spawn(server)
        async with asyncio.timeout(READY_TIMEOUT):
            while not ready():
                await asyncio.sleep(0.05)
        server.info = json.loads(server.ready_file.read_text())

    def spawn(self, server: Server) -> Callable[[], bool]:
        """Start the server; whether it is ready yet (raises if it exited).

        Never from a worker thread: the bed's processes get SIGKILL when the
        thread that started them ends (PR_SET_PDEATHSIG is per thread).
        """
        argv = [sys.executable, "-m", "imctl", "run", server.kind, "--config", str(self.config)]
        argv += ["--ready-file", str(server.ready_file)]
        for key, value in server.overrides.items():
            argv += ["--set", f"{key}={value}"]
        server.ready_file.unlink(missing_ok=True)
        server.info = {}
        server.process = process = self.bed.run(server.host, server.node_id, argv)

        def ready() -> bool:
            if not process.running():
                raise RuntimeError(f"{server.node_id} exited:\n{process.log_tail()}")
            return server.ready_file.exists()

        return ready

    async def create_users_and_group(self) -> None:
        """The users (one password hash for all: hashing is slow) and the traffic's group."""
        store = open_store(self.database_url)
        await store.open()
        try:
            await store.migrate()
            hashed = hash_password(md5_hex(PASSWORD))
            for name in [*USERS, *pair_users(PLAN), *group_users(PLAN)]:
                self.users[name] = await store.create_user(name, hashed, nick=name.title())
            members = [self.users[name] for name in group_users(PLAN)]
            group = await store.create_group("bed", "", members[0], base_pb2.GROUP_TYPE_NORMAL, members[1:])
            self.group_id = group.id
        finally:
            await store.close()

    def start_cluster(self) -> None:
        self.start_databases()
        asyncio.run(self.create_users_and_group())
        if has_delivery_log():
            self.db_overrides("redis")
        # Services first, gateways last (each links when the other is up; this is quicker),
        # db_proxies one after the other (each applies the schema).
        commands = sorted(run_commands(EXAMPLE), key=lambda command: START_ORDER.index(command[0]))
        for kind, overrides in commands:
            self.start(self.add(kind, overrides))
        self.wait_gateways({"msg-1", "msg-2"})
        self.wait_links_up()

    def db_overrides(self, backend: str) -> None:
        url = BACKENDS[backend].format(db=self.bed.address("db"))
        for server in self.servers.values():
            if server.kind == "db":
                server.overrides["delivery_log"] = url
        self.backend = backend

    def use_backend(self, backend: str) -> None:
        """Restart the db_proxies on ``backend``'s delivery log (nothing if it is the one in use)."""
        if backend == self.backend:
            return
        self.db_overrides(backend)
        for server in self.servers.values():
            if server.kind == "db":
                assert server.process is not None
                server.process.stop()
                self.start(server)
        self.wait_gateways({"msg-1", "msg-2"})
        self.wait_links_up()

    def processes_on(self, host: str) -> list[Server]:
        return [s for s in self.servers.values() if s.host == host]

    def heal(self) -> None:
        """Every link up, every process thawed, every dead server started again (the bed as it was)."""
        for host in self.bed.hosts.values():
            self.bed.restore(host.name)
            for process in host.processes:
                if process.running():
                    process.thaw()
        dead = [s for s in self.servers.values() if s.process is None or not s.process.running()]
        for server in sorted(dead, key=lambda s: START_ORDER.index(s.kind)):
            self.start(server)
        self.wait_gateways({"msg-1", "msg-2"})
        self.wait_links_up()

    # -- looking -------------------------------------------------------------------

    def login_url(self, index: int, path: str) -> str:
        return f"http://{self.bed.address(f'login-route-{index}')}:8080{path}"

    def handed_out(self, index: int) -> set[str]:
        """node_ids of the gateways login_server ``index`` hands out (OSError: it does not answer)."""
        with urllib.request.urlopen(self.login_url(index, "/gateways"), timeout=2) as response:
            rows = json.loads(response.read())
        return {row["node_id"] for row in rows}

    def wait_gateways(self, expected: set[str], timeout: float = READY_TIMEOUT) -> float:
        """Until both login_servers hand out exactly ``expected``; the seconds it took."""

        def both() -> bool:
            try:
                return all(self.handed_out(i) == expected for i in (1, 2))
            except OSError:  # a login server just started or its link is just back
                return False

        return wait_for(both, timeout, f"gateways {expected}")

    def wait_links_up(self, timeout: float = READY_TIMEOUT) -> float:
        """Until every gateway's links (db_proxies, route and login servers) are up again: a
        login server hands a gateway out while its link to a restarted db_proxy is still
        coming back, and a login meanwhile is refused "service unavailable"."""

        def all_up() -> bool:
            for server in self.servers.values():
                if server.kind != "msg" or server.process is None or not server.process.running():
                    continue
                url = f"http://{self.bed.address(server.host)}:{server.info['metrics_port']}/metrics"
                try:
                    with urllib.request.urlopen(url, timeout=1) as response:
                        text = response.read().decode()
                except OSError:
                    return False
                states = [
                    line.rpartition(" ")[2]
                    for line in text.splitlines()
                    if line.startswith("imcluster_gateway_upstream_up{")
                ]
                if not states or any(float(state) != 1.0 for state in states):
                    return False
            return True

        return wait_for(all_up, timeout, "every gateway's links up")

    def gateway_of(self, address: str) -> str:
        return next(s.node_id for s in self.servers.values() if s.overrides.get("advertise_ip") == address)

    async def client(
        self, name: str, login_server: int = 1, client_type: int = base_pb2.CLIENT_TYPE_WINDOWS
    ) -> tuple[TTClient, str]:
        """A client logged in where discovery sends it, as TeamTalk's does; and that gateway's node_id."""
        url = self.login_url(login_server, "/msg_server")
        reply = await asyncio.to_thread(discover, url, CONNECT_TIMEOUT / 2)
        assert reply["code"] == 0, reply
        client = TTClient()
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await client.connect(reply["priorIP"], int(reply["port"]))
                res = await client.login(name, PASSWORD, base_pb2.ClientType.ValueType(client_type))
        except BaseException:
            await client.close()
            raise
        if res.result_code != 0:
            await client.close()
        assert res.result_code == 0, res
        return client, self.gateway_of(reply["priorIP"])

    def connector(self, name: str, device: str, login_server: int) -> Connect:
        """How one device (pc or mobile) connects: its login server first, the other if that fails."""
        client_type = base_pb2.CLIENT_TYPE_ANDROID if device == "mobile" else base_pb2.CLIENT_TYPE_WINDOWS

        async def connect(user: str) -> tuple[TTClient, str]:
            try:
                return await self.client(user, login_server, client_type)
            except (OSError, AssertionError, TimeoutError):
                return await self.client(user, 3 - login_server, client_type)

        return connect

    def push_metrics(self) -> dict[tuple[str, int, str], float]:
        """(node_id, pid, sample) -> value of the :data:`PUSH_METRICS` counters of every server answering."""
        found: dict[tuple[str, int, str], float] = {}
        for server in self.servers.values():
            port = server.info.get("metrics_port")
            if not port or server.process is None or not server.process.running():
                continue
            url = f"http://{self.bed.address(server.host)}:{port}/metrics"
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    text = response.read().decode()
            except OSError:
                continue
            for line in text.splitlines():
                sample, _, value = line.rpartition(" ")
                name = sample.partition("{")[0]
                if line.startswith("#") or not name.startswith(PUSH_METRICS):
                    continue
                if name.endswith(("_created", "_bucket", "_sum")):
                    continue
                found[(server.node_id, server.process.pid, sample)] = float(value)
        return found

    def tracebacks(self) -> list[str]:
        found = []
        for log_file in sorted(self.bed.run_dir.glob("*.log")):
            text = log_file.read_text(errors="replace")
            if "Traceback (most recent call last)" in text:
                found.append(f"{log_file.name}:\n{text[-3000:]}")
        return found


def metric_changes(
    before: dict[tuple[str, int, str], float], after: dict[tuple[str, int, str], float]
) -> str:
    """The counters that changed, summed over the servers (a restarted one counts from 0)."""
    changes: dict[str, float] = {}
    for key, value in after.items():
        delta = value - before.get(key, 0.0)
        if delta:
            changes[key[2]] = changes.get(key[2], 0.0) + delta
    return ", ".join(f"{sample} +{delta:g}" for sample, delta in sorted(changes.items())) or "none"


RUNS_DIR = Path(tempfile.gettempdir()) / "imcluster-multihost"
RUNS_KEPT = 5


def bed_run_dir() -> Path:
    """A directory for this run's logs, kept after it (pytest's own tmp dirs rotate away within
    minutes on a machine running other test sessions); only the last few runs are kept."""
    RUNS_DIR.mkdir(exist_ok=True)
    for old in sorted(RUNS_DIR.iterdir())[:-RUNS_KEPT]:
        shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), dir=RUNS_DIR))


def configured(run_dir: Path) -> Path:
    """The example, with only its secret_file pointed at the bed's own secret.

    On a branch whose db_proxy has no delivery log yet, its ``delivery_log``
    line goes too (the server would refuse an unknown setting).
    """
    text = EXAMPLE.read_text()
    assert text.count(f'secret_file = "{EXAMPLE_SECRET}"') == 1
    assert len(DELIVERY_LOG_LINE.findall(text)) == 1
    if not has_delivery_log():
        text = DELIVERY_LOG_LINE.sub("", text)
    secret = write_secret_file(run_dir / "cluster.secret")
    path = run_dir / "multihost.toml"
    path.write_text(text.replace(f'secret_file = "{EXAMPLE_SECRET}"', f'secret_file = "{secret}"'))
    return path


@pytest.fixture(scope="session")
def multihost() -> Iterator[MultiHost]:
    run_dir = bed_run_dir()
    started = time.monotonic()
    with Bed(HOSTS, run_dir) as bed:
        cluster = MultiHost(bed, configured(run_dir))
        cluster.start_cluster()
        print(f"\nmulti-host bed: {len(HOSTS)} hosts up in {time.monotonic() - started:.1f}s")
        try:
            yield cluster
        finally:
            print(f"\nmulti-host bed: logs in {run_dir}")
    found = cluster.tracebacks()  # after the servers stopped: a shutdown must not fail either
    for store in ("mariadb", "nats"):  # the logs stay, the data goes
        shutil.rmtree(run_dir / store, ignore_errors=True)
    assert not found, "a server logged a traceback:\n\n" + "\n\n".join(found)


@pytest.fixture(scope="session", params=list(BACKENDS))
def backend(request: pytest.FixtureRequest, multihost: MultiHost) -> str:
    """The delivery log the db_proxies run on, for the scenarios that take it."""
    name: str = request.param
    if not has_delivery_log():
        if name != "redis":
            pytest.skip("db_proxy has no delivery_log setting on this branch (issue 8's i8-db not merged)")
        return "none (fire-and-forget, no delivery log on this branch)"
    multihost.use_backend(name)
    return name
