"""imctl: run, administer and observe an imcluster.

The commands live in :mod:`imctl.commands` (one module per area); this
module is the entry point that puts them together. Errors are one line on
stderr and a documented exit code, never a traceback.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import click

from common.config import SECTIONS, ConfigError, parse_assignments
from imctl.client import BadUsage
from imctl.commands.audit import audit, export, retention
from imctl.commands.backup import backup, restore
from imctl.commands.certs import certs, secret
from imctl.commands.directory import dept, group
from imctl.commands.live import kick, online, send, status
from imctl.commands.local import db, up
from imctl.commands.sync import sync
from imctl.commands.users import user
from imctl.context import admin_options, wants_json
from imctl.context import config_path as config_path_of
from imctl.output import echo_json
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
    type=click.Choice(list(SECTIONS)),
)
@click.option("--markdown", is_flag=True, help="Print the reference as Markdown (docs/configuration.md).")
@click.option("--json", "as_json", is_flag=True, help="Print the reference as JSON: settings by section.")
def config_reference(section: str | None, markdown: bool, as_json: bool) -> None:
    """Print every setting with its default and meaning."""
    from common.config import describe, markdown_reference, shown_default

    if markdown:
        click.echo(markdown_reference(_config_classes()), nl=False)
        return
    if as_json or wants_json():
        echo_json(
            {
                name: [
                    {"key": key, "type": type_name, "default": _plain(default), "doc": doc}
                    for key, type_name, default, doc in describe(cls)
                ]
                for name, cls in _config_classes().items()
                if not section or name == section
            }
        )
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


def _plain(default: object) -> object:
    """A default as JSON has it (tuples as lists; None: a subsection, see its own table)."""
    return list(default) if isinstance(default, tuple) else default


def _config_classes() -> dict[str, type]:
    from common.config import section_classes

    return section_classes()


COMMANDS: tuple[click.Command, ...] = (up, db, user, dept, group, online, kick, send, status)
COMMANDS += (audit, export, retention, sync, backup, restore, secret, certs)
for command in COMMANDS:
    main.add_command(command)
