"""imctl: run, administer and observe an imcluster.

Errors are one line on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import click

from common.config import ConfigError, load_config, parse_assignments
from db_proxy.config import DbProxyConfig

SERVERS = {
    "login": "login_server.__main__",
    "msg": "msg_server.__main__",
    "route": "route_server.__main__",
    "db": "db_proxy.__main__",
}


def resolve_config(path: str | None) -> Path | None:
    """--config, else $IMCLUSTER_CONFIG, else ./imcluster.toml if present."""
    chosen = path or os.environ.get("IMCLUSTER_CONFIG")
    if chosen:
        return Path(chosen)
    default = Path("imcluster.toml")
    return default if default.exists() else None


config_option = click.option(
    "--config",
    "config_path",
    metavar="FILE",
    help="Cluster config (TOML). Default: $IMCLUSTER_CONFIG or ./imcluster.toml.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Run and administer an imcluster (TeamTalk-compatible IM cluster)."""


@main.command()
@click.argument("server", type=click.Choice(sorted(SERVERS)))
@config_option
@click.option(
    "--set", "assignments", multiple=True, metavar="KEY=VALUE", help="Override one setting (repeatable)."
)
@click.option(
    "--ready-file", type=click.Path(path_type=Path), help="Write the real ports here as JSON once listening."
)
def run(server: str, config_path: str | None, assignments: tuple[str, ...], ready_file: Path | None) -> None:
    """Run one server in the foreground (for systemd and the like)."""
    try:
        overrides = parse_assignments(assignments)
        module = importlib.import_module(SERVERS[server])
        module.run(resolve_config(config_path), overrides, ready_file)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@config_option
@click.option("--gateways", default=2, show_default=True, help="How many msg_servers to run.")
@click.option(
    "--base-port",
    default=8000,
    show_default=True,
    help="Gateways listen from here; the others at fixed offsets.",
)
@click.option("--http-port", default=8080, show_default=True, help="login_server HTTP port.")
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
    "--run-dir",
    default="var/run",
    show_default=True,
    type=click.Path(path_type=Path),
    help="Logs and ready files.",
)
def up(
    config_path: str | None,
    gateways: int,
    base_port: int,
    http_port: int,
    advertise_ip: str,
    database_url: str | None,
    redis_url: str | None,
    run_dir: Path,
) -> None:
    """Start a local cluster (1 login, 1 route, 1 db_proxy, N gateways); Ctrl-C stops it."""
    from imctl.cluster import LocalCluster

    config = resolve_config(config_path)
    db_config = _db_config(config, database_url)
    asyncio.run(_init_database(db_config.database_url))
    cluster = LocalCluster(
        run_dir, config, gateways, base_port, http_port, advertise_ip, database_url, redis_url
    )
    stopping = False

    def on_signal(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        cluster.start()
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None
    login = cluster.by_name("login-1").info
    click.echo(f"imcluster is up ({gateways} gateways, storage {db_config.database_url}).")
    click.echo(f"  discovery (TeamTalk login URL): http://{advertise_ip}:{login['http_port']}/msg_server")
    for server in cluster.servers:
        click.echo(
            f"  {server.name:8} pid {server.process.pid if server.process else '?':>7}  log {server.log_file}"
        )
    click.echo("Add a user in another terminal:  imctl user add alice --password secret")
    click.echo("Ctrl-C stops the cluster.")
    try:
        while not stopping:
            dead = cluster.dead()
            if dead:
                click.echo(f"{dead[0].name} exited (see {dead[0].log_file}); stopping the cluster.", err=True)
                break
            time.sleep(0.2)
    finally:
        click.echo("stopping...")
        cluster.stop()
    if not stopping:
        sys.exit(1)


def _db_config(config: Path | None, database_url: str | None = None) -> DbProxyConfig:
    overrides = {"database_url": database_url} if database_url else {}
    try:
        return load_config(DbProxyConfig, "db_proxy", config, overrides)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


async def _init_database(url: str) -> int:
    from db_proxy.storage import create_database_if_missing, open_store

    if url.startswith("mysql://"):
        await create_database_if_missing(url)
    store = open_store(url)
    await store.open()
    try:
        return await store.migrate()
    finally:
        await store.close()


@main.group()
def db() -> None:
    """Database set-up."""


@db.command("init")
@config_option
@click.option("--database-url", default=None, help="Override db_proxy.database_url.")
def db_init(config_path: str | None, database_url: str | None) -> None:
    """Create the database if missing and bring its schema up to date."""
    config = _db_config(resolve_config(config_path), database_url)
    try:
        version = asyncio.run(_init_database(config.database_url))
    except Exception as exc:
        raise click.ClickException(f"cannot initialise {config.database_url}: {exc}") from None
    click.echo(f"{config.database_url}: schema version {version}")


@main.group()
def user() -> None:
    """Users."""


@user.command("add")
@click.argument("name")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True, help="Plain password.")
@click.option("--nick", default="", help="Display name (default: the user name).")
@click.option("--department", "department_id", default=0, help="Department id.")
@config_option
@click.option("--database-url", default=None, help="Override db_proxy.database_url.")
def user_add(
    name: str, password: str, nick: str, department_id: int, config_path: str | None, database_url: str | None
) -> None:
    """Create a user who can log in with NAME and PASSWORD."""
    from db_proxy.passwords import hash_password, md5_hex
    from db_proxy.storage import open_store
    from db_proxy.storage.model import DuplicateName

    config = _db_config(resolve_config(config_path), database_url)

    async def create() -> int:
        store = open_store(config.database_url)
        await store.open()
        try:
            await store.migrate()
            return await store.create_user(
                name, hash_password(md5_hex(password)), nick=nick or name, department_id=department_id
            )
        finally:
            await store.close()

    try:
        user_id = asyncio.run(create())
    except DuplicateName:
        raise click.ClickException(f"user {name!r} already exists") from None
    except Exception as exc:
        raise click.ClickException(f"cannot create {name!r}: {exc}") from None
    click.echo(f"created user {name!r} with id {user_id}")


@main.command("config")
@click.argument(
    "section", required=False, type=click.Choice(["login_server", "msg_server", "route_server", "db_proxy"])
)
@click.option("--markdown", is_flag=True, help="Print the reference as Markdown (docs/configuration.md).")
def config_reference(section: str | None, markdown: bool) -> None:
    """Print every setting with its default and meaning."""
    from common.config import describe, markdown_reference

    if markdown:
        click.echo(markdown_reference(_config_classes()), nl=False)
        return
    for name, cls in _config_classes().items():
        if section and name != section:
            continue
        click.echo(f"[{name}]")
        for key, type_name, default, doc in describe(cls):
            shown = list(default) if isinstance(default, tuple) else default
            click.echo(f"  {key} ({type_name}, default {shown!r}): {doc}")
        click.echo()


def _config_classes() -> dict[str, type]:
    from login_server.config import LoginServerConfig
    from msg_server.config import MsgServerConfig
    from route_server.config import RouteServerConfig

    return {
        "login_server": LoginServerConfig,
        "msg_server": MsgServerConfig,
        "route_server": RouteServerConfig,
        "db_proxy": DbProxyConfig,
    }
