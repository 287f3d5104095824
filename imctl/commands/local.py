"""Commands that work on this machine: ``imctl up`` and ``imctl db ...``."""

from __future__ import annotations

import asyncio
import secrets
import signal
import sys
from pathlib import Path
from typing import Any

import click

from common.config import ConfigError, load_config, redact_urls
from db_proxy.config import DbProxyConfig
from imctl.client import EXIT_ERROR, BadUsage, CliError, Unreachable
from imctl.context import config_path as config_path_of
from imctl.context import wants_json
from imctl.output import echo_json
from imctl.settings import SECRET_FILE, TLS_DIR, TOKEN_FILE, URL_FILE, load_imctl_config, write_secret

TOKEN_ENV = "IMCLUSTER_LOGIN_SERVER__ADMIN_TOKEN"

config_option = click.option(
    "--config",
    "config_path",
    metavar="FILE",
    help="Cluster config (TOML). Default: $IMCLUSTER_CONFIG or ./imcluster.toml.",
)


def _load(cls: type[Any], section: str, config: Path | None, overrides: dict[str, str] | None = None) -> Any:
    try:
        return load_config(cls, section, config, overrides)
    except ConfigError as exc:
        raise BadUsage(str(exc)) from None


def db_config(config: Path | None, database_url: str | None = None) -> DbProxyConfig:
    config_obj: DbProxyConfig = _load(
        DbProxyConfig, "db_proxy", config, {"database_url": database_url} if database_url else {}
    )
    return config_obj


async def init_database(url: str) -> int:
    from db_proxy.storage import create_database_if_missing, open_store

    if url.startswith("mysql://"):
        await create_database_if_missing(url)
    store = open_store(url)
    await store.open()
    try:
        return await store.migrate()
    finally:
        await store.close()


@click.command()
@config_option
@click.option("--gateways", default=2, show_default=True, help="How many msg_servers to run.")
@click.option("--routes", default=1, show_default=True, help="How many route_servers to run (active-active).")
@click.option(
    "--base-port",
    default=8000,
    show_default=True,
    help="Gateways listen from here; the others at fixed offsets (README: Picking ports).",
)
@click.option("--http-port", default=8080, show_default=True, help="login_server HTTP port.")
@click.option(
    "--free-ports",
    is_flag=True,
    help="Internal links and metrics on ports the system picks (printed); client ports from --base-port.",
)
@click.option(
    "--advertise-ip", default="127.0.0.1", show_default=True, help="Gateway address handed to clients."
)
@click.option(
    "--database-url",
    default=None,
    help="Override db_proxy.database_url (e.g. mysql://root@127.0.0.1/imcluster).",
)
@click.option("--redis-url", default=None, help="Override db_proxy.redis_url.")
@click.option(
    "--delivery-log",
    default=None,
    help="Override db_proxy.delivery_log (memory://, redis://HOST:6379/0, nats://HOST:4222).",
)
@click.option(
    "--run-dir",
    default=None,
    type=click.Path(path_type=Path),
    help="Logs, ready files, the admin token and the cluster secret. Default: [imctl] run_dir, var/run.",
)
@click.option(
    "--tls",
    is_flag=True,
    help="Mutual TLS on internal links, with a CA and certificates made in RUN_DIR/tls (kept for next time).",
)
def up(
    config_path: str | None,
    gateways: int,
    routes: int,
    base_port: int,
    http_port: int,
    free_ports: bool,
    advertise_ip: str,
    database_url: str | None,
    redis_url: str | None,
    delivery_log: str | None,
    run_dir: Path | None,
    tls: bool,
) -> None:
    """Start a local cluster (1 login, 1 db_proxy, N gateways, R routes); Ctrl-C stops it.

    Unless login_server.admin_token is configured, a random admin token is
    made for this run and written to RUN_DIR/admin-token (owner-only), where
    the admin commands (imctl user, dept, group, status...) find it. Unless
    a cluster secret is configured ([cluster]), one is made for this run in
    RUN_DIR/cluster-secret (owner-only) and every server is given its path.
    Internal ports and metrics listen on 127.0.0.1. Every port is checked
    free before anything starts. A server that dies is started again on
    its ports (after 1 s, doubling to 30 s while it keeps dying); only
    Ctrl-C or SIGTERM stops the cluster. Each server logs to RUN_DIR/NAME.log,
    rotated at [log] max_bytes (10 MiB), [log] backups (5) kept.
    """
    from common.cluster_config import ClusterConfig
    from common.log import LogConfig
    from imctl.cluster import LocalCluster, write_secret_file
    from imctl.ports import PortError, check_free
    from login_server.config import LoginServerConfig
    from msfs.config import MsfsConfig

    config = config_path_of(config_path)
    db = db_config(config, database_url)
    run_dir = run_dir or Path(_load_imctl(config).run_dir)
    # The config's store, as file_server, msfs and imctl backup read it.
    store_dir = Path(_load(MsfsConfig, "msfs", config).store)
    configured_token = _load(LoginServerConfig, "login_server", config).admin_token
    token = configured_token or secrets.token_urlsafe(32)
    configured_secret = bool(_load(ClusterConfig, "cluster", config).secrets())
    log_config = _load(LogConfig, "log", config)
    if gateways < 1 or routes < 1:
        raise BadUsage("--gateways and --routes must be at least 1")
    cluster = LocalCluster(
        run_dir,
        config,
        gateways=gateways,
        base_port=base_port,
        http_port=http_port,
        advertise_ip=advertise_ip,
        database_url=database_url,
        redis_url=redis_url,
        delivery_log=delivery_log,
        routes=routes,
        tls_dir=run_dir / TLS_DIR if tls else None,
        store_dir=store_dir,
        free_internal=free_ports,
        # One rotated file per server under the run dir, whatever [log] file says;
        # [log] max_bytes 0 (never rotate) is not kept: a run dir must not fill a disk.
        log_max_bytes=log_config.max_bytes or LOG_MAX_BYTES,
        log_backups=log_config.backups,
    )
    try:
        plan = cluster.port_plan()
        check_free(plan)
    except PortError as exc:
        raise BadUsage(str(exc)) from None
    try:
        asyncio.run(init_database(db.database_url))
    except Exception as exc:
        raise Unreachable(f"cannot initialise {redact_urls(db.database_url)}: {exc}") from None
    if not configured_token:
        cluster.environ = {"login": {TOKEN_ENV: token}}
    made_secret = None if configured_secret else write_secret_file(run_dir / SECRET_FILE)
    cluster.secret_file = made_secret
    stopping = False

    def on_signal(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        cluster.start()
    except RuntimeError as exc:
        if made_secret is not None:
            made_secret.unlink(missing_ok=True)
        raise CliError(str(exc)) from None
    login = cluster.by_name("login-1").info
    admin_url = f"http://127.0.0.1:{login['http_port']}"
    written = _write_access_files(run_dir, admin_url, None if configured_token else token)
    click.echo(f"imcluster is up ({gateways} gateways, storage {redact_urls(db.database_url)}).")
    click.echo(f"  discovery (TeamTalk login URL): http://{advertise_ip}:{login['http_port']}/msg_server")
    file_server, msfs = cluster.by_name("file-1").info, cluster.by_name("msfs-1").info
    click.echo(
        f"  pictures (msfs, in discovery): http://{advertise_ip}:{msfs['port']}/, files (file_server, "
        f"handed out by the gateways): {advertise_ip}:{file_server['client_port']}; both in {store_dir}"
    )
    for server in cluster.servers:
        click.echo(
            f"  {server.name:8} pid {server.process.pid if server.process else '?':>7}  log {server.log_file}"
            f"  open files {server.info.get('nofile', '?')}"
            + (f", max {server.info['max_connections']} clients" if "max_connections" in server.info else "")
        )
    click.echo("Ports (* = clients connect: open in the firewall):")
    for line in _port_lines(cluster.servers):
        click.echo(line)
    if configured_token:
        click.echo(f"Admin API: {admin_url}/admin/v1 with the configured login_server.admin_token.")
    else:
        token_file = run_dir / TOKEN_FILE
        click.echo(f"Admin API: {admin_url}/admin/v1, token in {token_file} (imctl reads it there);")
        click.echo(f'  curl -H "Authorization: Bearer $(cat {token_file})" {admin_url}/admin/v1/status')
    click.echo(f"Web console: {admin_url}/console/ (log in with the admin token).")
    secret_source = f"made for this run in {made_secret}" if made_secret else "the configured one"
    click.echo(f"Internal links: on 127.0.0.1, cluster secret {secret_source}, TLS {'on' if tls else 'off'}.")
    click.echo("Add a user in another terminal:  imctl user add alice --password secret")
    click.echo("A server that exits is restarted; Ctrl-C stops the cluster.")
    try:
        cluster.supervise(lambda: stopping, lambda line: click.echo(line, err=True))
    finally:
        click.echo("stopping...")
        cluster.stop()
        # A token of a cluster that is gone only misleads the next command,
        # and its secret should not outlive it.
        for path in [*written, *([made_secret] if made_secret else [])]:
            path.unlink(missing_ok=True)


LOG_MAX_BYTES = 10 * 1024 * 1024  # per server log file under the run dir, before it rotates
_CLIENT_KEYS = {"msg": ("port",), "login": ("http_port",), "file": ("client_port",), "msfs": ("port",)}


def _port_lines(servers: Any) -> list[str]:
    """One line per server: each port it bound, the ones clients use starred."""
    lines = []
    for server in servers:
        ports = []
        for key in ("port", "http_port", "client_port", "gateway_port", "metrics_port"):
            if key in server.info:
                star = "*" if key in _CLIENT_KEYS.get(server.kind, ()) else ""
                ports.append(f"{key.removesuffix('_port')} {server.info[key]}{star}")
        lines.append(f"  {server.name:8} " + ", ".join(ports))
    return lines


def _load_imctl(config: Path | None) -> Any:
    try:
        return load_imctl_config(config)
    except ConfigError as exc:
        raise BadUsage(str(exc)) from None


def _write_access_files(run_dir: Path, url: str, token: str | None) -> list[Path]:
    """Where the admin commands look by default: the API's URL and, if generated here, its token."""
    url_file = run_dir / URL_FILE
    url_file.write_text(url + "\n")
    if token is None:
        return [url_file]
    token_file = run_dir / TOKEN_FILE
    write_secret(token_file, token + "\n")
    return [url_file, token_file]


@click.group()
def db() -> None:
    """Database set-up and schema migrations."""


@db.command("init")
@config_option
@click.option("--database-url", default=None, help="Override db_proxy.database_url.")
def db_init(config_path: str | None, database_url: str | None) -> None:
    """Create the database if missing and bring its schema up to date."""
    config = db_config(config_path_of(config_path), database_url)
    try:
        version = asyncio.run(init_database(config.database_url))
    except Exception as exc:
        raise Unreachable(f"cannot initialise {redact_urls(config.database_url)}: {exc}") from None
    click.echo(f"{redact_urls(config.database_url)}: schema version {version}")


async def _schema_version(url: str, migrate: bool) -> tuple[int, int]:
    """(version before, version after); after == before unless ``migrate``."""
    from db_proxy.storage import open_store
    from db_proxy.storage.model import StoreError

    store = open_store(url)
    await store.open()
    try:
        try:
            async with store.db.reading() as tx:
                rows = await tx.fetchall("SELECT MAX(version) FROM schema_version")
            before = int(rows[0][0] or 0)
        except StoreError:
            before = 0  # no schema_version table: nothing applied yet
        after = await store.migrate() if migrate else before
        return before, after
    finally:
        await store.close()


def _run_schema(url: str, migrate: bool) -> tuple[int, int]:
    try:
        return asyncio.run(_schema_version(url, migrate))
    except Exception as exc:
        raise Unreachable(f"cannot open {url}: {exc}") from None


@db.command("migrate")
@config_option
@click.option("--database-url", default=None, help="Override db_proxy.database_url.")
def db_migrate(config_path: str | None, database_url: str | None) -> None:
    """Apply the schema migrations the database lacks (the database must exist)."""
    config = db_config(config_path_of(config_path), database_url)
    before, after = _run_schema(config.database_url, migrate=True)
    shown = redact_urls(config.database_url)
    if before == after:
        click.echo(f"{shown}: schema version {after}, already current")
    else:
        click.echo(f"{shown}: schema version {before} -> {after}")


@db.command("check")
@config_option
@click.option("--database-url", default=None, help="Override db_proxy.database_url.")
@click.option("--json", "as_json", is_flag=True, help="Print the checks as a JSON object.")
def db_check(config_path: str | None, database_url: str | None, as_json: bool) -> None:
    """Check the database without changing it: it exists, opens, and has this code's schema.

    Exit 1 if it does not exist or its schema version is not the one this
    code expects; 3 if it cannot be reached.
    """
    from imctl.db_check import check_database

    config = db_config(config_path_of(config_path), database_url)
    report = check_database(config.database_url)
    failed = next((c for c in report.checks if not c.ok), None)
    if as_json or wants_json():
        echo_json(report.as_json())
    elif failed is None or report.reachable:
        # The outcome in one line: the first failure, else the schema version.
        click.echo(f"{report.database_url}: {(failed or report.checks[-1]).detail}")
    if failed is None:
        return
    if not report.reachable:
        raise Unreachable(f"{report.database_url}: {failed.detail}")
    sys.exit(EXIT_ERROR)
