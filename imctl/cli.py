"""imctl: run, administer and observe an imcluster.

The commands live in :mod:`imctl.commands` (one module per area); this
module is the entry point that puts them together. Errors are one line on
stderr and a documented exit code, never a traceback.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import click

from common.config import ConfigError, parse_assignments
from imctl.client import BadUsage
from imctl.commands.backup import backup, restore
from imctl.commands.certs import certs, secret
from imctl.commands.directory import dept, group
from imctl.commands.live import kick, online, send, status
from imctl.commands.local import db, up
from imctl.commands.users import user
from imctl.context import admin_options
from imctl.context import config_path as config_path_of
from imctl.settings import resolve_config

SERVERS = {
    "login": "login_server.__main__",
    "msg": "msg_server.__main__",
    "route": "route_server.__main__",
    "db": "db_proxy.__main__",
    "file": "file_server.__main__",
    "msfs": "msfs.__main__",
}

__all__ = ["main", "resolve_config"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@admin_options
def main() -> None:
    """Run and administer an imcluster (TeamTalk-compatible IM cluster).

    The administration commands (user, dept, group, online, kick, send,
    status) talk to the login_server's admin API. They find it with --url,
    $IMCLUSTER_URL, [imctl] url in the config, or the local `imctl up`
    cluster; the token with --token, $IMCLUSTER_TOKEN, [imctl] token or
    [login_server] admin_token in the config, or the file `imctl up` writes
    (var/run/admin-token). --json prints JSON for scripts.

    \b
    Exit codes:
      0  done
      1  the server refused (not found, conflict, bad value...) or failed
      2  usage error (bad option, bad config or input file)
      3  cluster unreachable (no login_server, or a server behind it down)
      4  unauthorized (no admin token, or a wrong one)
    """


@main.command()
@click.argument("server", type=click.Choice(sorted(SERVERS)))
@click.option(
    "--config",
    "config_path",
    metavar="FILE",
    help="Cluster config (TOML). Default: $IMCLUSTER_CONFIG or ./imcluster.toml.",
)
@click.option(
    "--set", "assignments", multiple=True, metavar="KEY=VALUE", help="Override one setting (repeatable)."
)
@click.option(
    "--ready-file",
    type=click.Path(path_type=Path),
    help="Write the real ports here as JSON once listening.",
)
def run(server: str, config_path: str | None, assignments: tuple[str, ...], ready_file: Path | None) -> None:
    """Run one server in the foreground (for systemd and the like)."""
    try:
        overrides = parse_assignments(assignments)
        module = importlib.import_module(SERVERS[server])
        module.run(config_path_of(config_path), overrides, ready_file)
    except ConfigError as exc:
        raise BadUsage(str(exc)) from None


@main.command("config")
@click.argument(
    "section",
    required=False,
    type=click.Choice(
        ["login_server", "msg_server", "route_server", "db_proxy", "file_server", "msfs", "cluster", "imctl"]
    ),
)
@click.option("--markdown", is_flag=True, help="Print the reference as Markdown (docs/configuration.md).")
def config_reference(section: str | None, markdown: bool) -> None:
    """Print every setting with its default and meaning."""
    from common.config import describe, markdown_reference, shown_default

    if markdown:
        click.echo(markdown_reference(_config_classes()), nl=False)
        return
    for name, cls in _config_classes().items():
        if section and name != section:
            continue
        click.echo(f"[{name}]")
        for key, type_name, default, doc in describe(cls):
            if default is None:  # a subsection, printed as its own table
                click.echo(f"  {key} ({type_name}): {doc}")
            else:
                click.echo(f"  {key} ({type_name}, default {shown_default(default)}): {doc}")
        click.echo()


def _config_classes() -> dict[str, type]:
    from common.cluster_config import ClusterConfig
    from db_proxy.config import DbProxyConfig
    from file_server.config import FileServerConfig
    from imctl.settings import ImctlConfig
    from login_server.config import LoginServerConfig
    from msfs.config import MsfsConfig
    from msg_server.config import MsgServerConfig
    from route_server.config import RouteServerConfig

    return {
        "login_server": LoginServerConfig,
        "msg_server": MsgServerConfig,
        "route_server": RouteServerConfig,
        "db_proxy": DbProxyConfig,
        "file_server": FileServerConfig,
        "msfs": MsfsConfig,
        "cluster": ClusterConfig,
        "imctl": ImctlConfig,
    }


for command in (up, db, user, dept, group, online, kick, send, status, secret, certs, backup, restore):
    main.add_command(command)
