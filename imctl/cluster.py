"""A local cluster as separate processes: what ``imctl up`` runs.

Each server is ``python -m imctl run <server>`` with the shared config file
and its own overrides (node id, port). Internal ports and metrics listen on
127.0.0.1 only; with ``secret_file`` every server gets ``--set
cluster.secret_file=PATH`` (a path: the secret itself would show in ``ps``),
with ``tls_dir`` a certificate of its own from a CA made there (mutual TLS
on every internal link). Children die with us: they get
SIGTERM from the kernel if imctl dies (PR_SET_PDEATHSIG), and on Ctrl-C or
SIGTERM imctl stops them in dependency order and waits, bounded, before
killing what is left, so nothing is orphaned.

``imctl up`` also runs :meth:`LocalCluster.supervise`: a child that dies is
started again on the ports it had (so its peers find it), with backoff
(imctl.supervise). The tests do not: they kill children on purpose.
"""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from imctl.ports import Port, plan_ports, port_table
from imctl.supervise import Backoff, describe_exit, seconds

PR_SET_PDEATHSIG = 1
LOOPBACK = "127.0.0.1"
#: The settings a server's ready file reports the real port of.
PORT_KEYS = ("port", "metrics_port", "http_port", "gateway_port", "client_port")


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (another user's counts: it exists)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_secret_file(path: Path) -> Path:
    """A fresh cluster secret in ``path``, readable by the owner only."""
    from imctl.settings import write_secret

    path.parent.mkdir(parents=True, exist_ok=True)
    write_secret(path, secrets.token_urlsafe(32) + "\n")
    return path


def _die_with_parent() -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass  # not Linux: Ctrl-C still reaches the whole process group


@dataclass
class ServerProcess:
    kind: str  # login, msg, route, db, file, msfs
    name: str
    overrides: dict[str, str]
    ready_file: Path
    log_file: Path
    process: subprocess.Popen[bytes] | None = None
    info: dict[str, object] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)  # added to the child's environment
    # > 0: the server writes log_file itself, rotated at this size (common.log), and
    # its stdout/stderr (a crash before logging starts) go to out_file.
    log_max_bytes: int = 0
    log_backups: int = 5

    @property
    def out_file(self) -> Path:
        return self.log_file.with_suffix(".out") if self.log_max_bytes > 0 else self.log_file

    def start(self, config_path: Path | None) -> None:
        args = [sys.executable, "-m", "imctl", "run", self.kind, "--ready-file", str(self.ready_file)]
        if config_path is not None:
            args += ["--config", str(config_path)]
        overrides = dict(self.overrides)
        if self.log_max_bytes > 0:
            overrides["log.file"] = str(self.log_file)
            overrides["log.max_bytes"] = str(self.log_max_bytes)
            overrides["log.backups"] = str(self.log_backups)
        for key, value in overrides.items():
            args += ["--set", f"{key}={value}"]
        self.ready_file.unlink(missing_ok=True)
        self.info = {}
        out = self.out_file.open("ab")
        self.process = subprocess.Popen(
            args,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
            env={**os.environ, **self.env} if self.env else None,
        )
        out.close()

    def poll_ready(self) -> bool:
        """Whether the ready file is there (and ``info`` read from it)."""
        if not self.ready_file.exists():
            return False
        self.info = json.loads(self.ready_file.read_text())
        return True

    def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                return False
            if self.poll_ready():
                return True
            time.sleep(0.05)
        return False

    def pin_ports(self) -> None:
        """Ports the system picked (0) become the ones the restarted server asks for: its peers know them."""
        for key in PORT_KEYS:
            if self.overrides.get(key) == "0" and isinstance(self.info.get(key), int):
                self.overrides[key] = str(self.info[key])

    def tail(self, chars: int = 3000) -> str:
        """The end of what the server wrote (its log, and its stderr if kept apart)."""
        parts = []
        for path in dict.fromkeys([self.out_file, self.log_file]):
            try:
                text = path.read_text(errors="replace")
            except FileNotFoundError:
                continue
            if text:
                parts.append(text[-chars:])
        return "\n".join(parts)

    def stop(self, timeout: float) -> None:
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass(frozen=True)
class DbNode:
    """One db_proxy of a local cluster: its name (and node id), the roles it serves
    (empty: every role) and its databases (None: the cluster's ``database_url``)."""

    name: str
    roles: tuple[str, ...] = ()
    directory_database_url: str | None = None
    messages_database_url: str | None = None

    def overrides(self) -> dict[str, str]:
        result = {"node_id": self.name}
        if self.roles:
            result["roles"] = ",".join(self.roles)
        if self.directory_database_url:
            result["directory_database_url"] = self.directory_database_url
        if self.messages_database_url:
            result["messages_database_url"] = self.messages_database_url
        return result


#: One db_proxy serving everything: what ``imctl up`` runs.
SINGLE_DB: tuple[DbNode, ...] = (DbNode("db-1"),)


@dataclass
class LocalCluster:
    """The default local topology: 1 db_proxy, 1 login, N gateways, R route servers,
    1 file_server and 1 msfs (sharing one file store under ``run_dir``). ``db_layout``
    names other db_proxies (roles, databases); every gateway and the login_server
    link to each of them.

    With ``base_port`` 0 every server binds a free port and the next one is
    told the real port of the last (that is how the tests run clusters);
    otherwise the ports come from :func:`imctl.ports.plan_ports` (internal
    ones free too with ``free_internal``).
    """

    run_dir: Path
    config_path: Path | None
    gateways: int = 2
    base_port: int = 8000
    http_port: int = 8080
    advertise_ip: str = "127.0.0.1"
    database_url: str | None = None
    redis_url: str | None = None
    delivery_log: str | None = None  # db_proxy.delivery_log; None: the config's (memory:// by default)
    routes: int = 1  # more than one: active-active, every gateway links to each
    files: bool = True  # run file_server and msfs (tests that do not use them save two processes)
    store_dir: Path | None = None  # their shared file store; None: run_dir/files
    extra: dict[str, dict[str, str]] = field(default_factory=dict)  # kind -> overrides for every such server
    # kind -> environment for every such server: for secrets (the admin
    # token), which --set would show to every local user in `ps`.
    environ: dict[str, dict[str, str]] = field(default_factory=dict)
    secret_file: Path | None = None  # None: no cluster secret (every link is on loopback)
    tls_dir: Path | None = None  # None: no TLS; else the CA and one certificate per server, made if missing
    db_layout: tuple[DbNode, ...] = SINGLE_DB
    free_internal: bool = False  # with base_port: internal links and metrics on ports the system picks
    log_max_bytes: int = 0  # > 0: each server writes NAME.log itself, rotated (stderr to NAME.out)
    log_backups: int = 5
    servers: list[ServerProcess] = field(default_factory=list)
    file_addr: str = ""  # the file_server's internal link, once started
    _ports: dict[tuple[str, str], int] = field(default_factory=dict)

    def port_plan(self) -> list[Port]:
        """The ports :meth:`start` will ask for (raises imctl.ports.PortError); empty with base_port 0."""
        if not self.base_port:
            return []
        return plan_ports(
            self.base_port,
            self.http_port,
            self.gateways,
            self.routes,
            [node.name for node in self.db_layout],
            self.files,
            self.free_internal,
        )

    def _port(self, server: str, key: str) -> str:
        return str(self._ports.get((server, key), 0))

    def _cluster_overrides(self, name: str) -> dict[str, str]:
        """The ``[cluster]`` settings of server ``name``: the secret's file, its TLS files."""
        result = {}
        if self.secret_file is not None:
            result["cluster.secret_file"] = str(self.secret_file)
        if self.tls_dir is not None:
            from imctl.certs import issue

            _, (node,) = issue(self.tls_dir, [name])
            result["cluster.tls_ca"] = str(self.tls_dir / "ca.pem")
            result["cluster.tls_cert"] = str(node.cert)
            result["cluster.tls_key"] = str(node.key)
        return result

    def _server(self, kind: str, name: str, overrides: dict[str, str]) -> ServerProcess:
        merged = {
            "metrics_host": LOOPBACK,
            **overrides,
            # msfs has no internal links: clients only, over HTTP.
            **(self._cluster_overrides(name) if kind != "msfs" else {}),
            **self.extra.get(kind, {}),
        }
        return ServerProcess(
            kind,
            name,
            merged,
            self.run_dir / f"{name}.ready",
            self.run_dir / f"{name}.log",
            env=dict(self.environ.get(kind, {})),
            log_max_bytes=self.log_max_bytes,
            log_backups=self.log_backups,
        )

    def start(self, ready_timeout: float = 30.0) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._ports = port_table(self.port_plan())
        routes = [
            self._launch(
                self._server(
                    "route",
                    f"route-{i + 1}",
                    {
                        "node_id": f"route-{i + 1}",
                        "host": LOOPBACK,
                        "port": self._port(f"route-{i + 1}", "port"),
                        "metrics_port": self._port(f"route-{i + 1}", "metrics_port"),
                    },
                ),
                ready_timeout,
            )
            for i in range(self.routes)
        ]
        route_addr = ",".join(f"127.0.0.1:{route.info['port']}" for route in routes)
        dbs = [self._start_db(i, node, route_addr, ready_timeout) for i, node in enumerate(self.db_layout)]
        http = self._port("login-1", "http_port")
        db_addr = ",".join(f"127.0.0.1:{db.info['port']}" for db in dbs)
        msfs_url = self._start_files(ready_timeout) if self.files else ""
        login_overrides = {
            "node_id": "login-1",
            "http_port": http,
            "gateway_host": LOOPBACK,
            "gateway_port": self._port("login-1", "gateway_port"),
            "metrics_port": self._port("login-1", "metrics_port"),
            # For the admin API, which calls both.
            "db_proxies": db_addr,
            "route_servers": route_addr,
            "msfs_prior": msfs_url,
            "msfs_backup": msfs_url,
        }
        login = self._launch(self._server("login", "login-1", login_overrides), ready_timeout)
        for i in range(self.gateways):
            self.add_gateway(
                i,
                route_addr,
                db_addr,
                f"127.0.0.1:{login.info['gateway_port']}",
                ready_timeout,
            )
        self.wait_registered(self.gateways, ready_timeout)

    def _start_db(self, index: int, node: DbNode, route_addr: str, ready_timeout: float) -> ServerProcess:
        overrides = {
            "host": LOOPBACK,
            "port": self._port(node.name, "port"),
            "metrics_port": self._port(node.name, "metrics_port"),
            "route_servers": route_addr,
        }
        if self.database_url:
            overrides["database_url"] = self.database_url
        if self.redis_url:
            overrides["redis_url"] = self.redis_url
        if self.delivery_log:
            overrides["delivery_log"] = self.delivery_log
        return self._launch(self._server("db", node.name, {**overrides, **node.overrides()}), ready_timeout)

    def _start_files(self, ready_timeout: float) -> str:
        """file_server and msfs on one store; msfs's URL, for discovery."""
        store = str(self.store_dir or self.run_dir / "files")
        file_server = self._launch(
            self._server(
                "file",
                "file-1",
                {
                    "node_id": "file-1",
                    "host": LOOPBACK,
                    "port": self._port("file-1", "port"),
                    "client_port": self._port("file-1", "client_port"),
                    "advertise_ip": self.advertise_ip,
                    "store": store,
                    "metrics_port": self._port("file-1", "metrics_port"),
                },
            ),
            ready_timeout,
        )
        self.file_addr = f"127.0.0.1:{file_server.info['port']}"
        msfs = self._launch(
            self._server(
                "msfs",
                "msfs-1",
                {
                    "node_id": "msfs-1",
                    "port": self._port("msfs-1", "port"),
                    "store": store,
                    "metrics_port": self._port("msfs-1", "metrics_port"),
                },
            ),
            ready_timeout,
        )
        return f"http://{self.advertise_ip}:{msfs.info['port']}/"

    def wait_registered(self, count: int, timeout: float) -> None:
        """Wait until login_server hands out ``count`` gateways."""
        url = f"http://127.0.0.1:{self.by_name('login-1').info['http_port']}/gateways"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with urllib.request.urlopen(url, timeout=2) as response:
                if len(json.loads(response.read())) >= count:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"login_server did not see {count} gateways within {timeout}s")

    def add_gateway(
        self, index: int, route: str, db: str, login: str, ready_timeout: float = 30.0
    ) -> ServerProcess:
        name = f"msg-{index + 1}"
        overrides = {
            "node_id": name,
            "port": self._port(name, "port"),
            "metrics_port": self._port(name, "metrics_port"),
            "advertise_ip": self.advertise_ip,
            "db_proxies": db,
            "route_servers": route,
            "login_servers": login,
        }
        if self.file_addr:
            overrides["file_servers"] = self.file_addr
        return self._launch(self._server("msg", name, overrides), ready_timeout)

    def _launch(self, server: ServerProcess, ready_timeout: float) -> ServerProcess:
        self.servers.append(server)
        server.start(self.config_path)
        if not server.wait_ready(ready_timeout):
            tail = server.tail()
            self.stop()
            raise RuntimeError(f"{server.name} did not start; its log ends with:\n{tail}")
        return server

    def by_name(self, name: str) -> ServerProcess:
        return next(s for s in self.servers if s.name == name)

    def stop(self, timeout: float = 10.0) -> None:
        # Gateways first (their clients go), then the services they lean on.
        for server in reversed(self.servers):
            server.stop(timeout)

    def dead(self) -> list[ServerProcess]:
        return [s for s in self.servers if s.process is not None and s.process.poll() is not None]

    def supervise(
        self,
        should_stop: Callable[[], bool],
        echo: Callable[[str], None],
        interval: float = 0.2,
        backoff: Callable[[], Backoff] = Backoff,
    ) -> None:
        """Restart children that die, each with its own backoff, until ``should_stop()``."""
        supervisor = Supervisor(self, echo, backoff)
        while not should_stop():
            supervisor.step(time.monotonic())
            time.sleep(interval)


class Supervisor:
    """One pass at a time over a cluster's children: notice deaths, restart the due ones."""

    def __init__(
        self, cluster: LocalCluster, echo: Callable[[str], None], backoff: Callable[[], Backoff] = Backoff
    ) -> None:
        self.cluster = cluster
        self.echo = echo
        self.backoffs: dict[str, Backoff] = {}
        self.due: dict[str, float] = {}  # name -> when to start it again
        self.starting: set[str] = set()  # restarted, not yet ready
        now = time.monotonic()
        for server in cluster.servers:
            server.pin_ports()
            self.backoffs[server.name] = b = backoff()
            b.started(now)

    def step(self, now: float) -> None:
        for server in self.cluster.servers:
            name, proc = server.name, server.process
            if name in self.due:
                if now >= self.due[name]:
                    del self.due[name]
                    server.start(self.cluster.config_path)
                    self.backoffs[name].started(now)
                    self.starting.add(name)
                continue
            if proc is not None and proc.poll() is not None:
                self.starting.discard(name)
                delay = self.backoffs[name].exited(now)
                self.due[name] = now + delay
                self.echo(
                    f"{name} exited ({describe_exit(proc.returncode)}); restarting in {seconds(delay)}"
                    f" (log {server.log_file})"
                )
            elif name in self.starting and server.poll_ready():
                self.starting.discard(name)
                ports = ", ".join(f"{k} {server.info[k]}" for k in PORT_KEYS if k in server.info)
                pid = server.process.pid if server.process else "?"
                self.echo(f"{name} is back (pid {pid}; {ports})")
