"""What every admin command shares: ``--url``, ``--token``, ``--json``, ``--config``.

The options are accepted both before the command (``imctl --json user
list``) and after it (``imctl user list --json``); either way they land in
the click context's ``meta``, shared by the whole command chain, and
:func:`admin` turns them into an :class:`Admin` for the command.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from common.config import ConfigError
from imctl.client import ApiClient, BadUsage
from imctl.output import echo_json
from imctl.settings import Target, resolve_config, resolve_target

F = TypeVar("F", bound=Callable[..., Any])
META = "imctl.options"


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value not in (None, False) and param.name is not None:
        ctx.meta.setdefault(META, {})[param.name] = value
    return value


def admin_options(func: F) -> F:
    """Add the shared options to a command or group (their values go to ctx.meta)."""
    options = [
        click.option(
            "--url", metavar="URL", expose_value=False, callback=_remember, help="Admin API of the cluster."
        ),
        click.option(
            "--token", metavar="TOKEN", expose_value=False, callback=_remember, help="Admin API token."
        ),
        click.option(
            "--json",
            "as_json",
            is_flag=True,
            expose_value=False,
            callback=_remember,
            help="Print JSON (for scripts) instead of tables.",
        ),
        click.option(
            "--config",
            "config",
            metavar="FILE",
            expose_value=False,
            callback=_remember,
            help="Cluster config (TOML). Default: $IMCLUSTER_CONFIG or ./imcluster.toml.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@dataclass
class Admin:
    """The admin API as one command sees it."""

    target: Target
    as_json: bool
    config_path: Path | None

    @property
    def client(self) -> ApiClient:
        return ApiClient(self.target.url, self.target.token)

    def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        query: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        return self.client.request(method, path, body, query, timeout)

    def show(self, result: Any, human: Callable[[], None]) -> None:
        """``result`` as JSON with --json, else whatever ``human`` prints."""
        if self.as_json:
            echo_json(result)
        else:
            human()


def config_path(given: str | None) -> Path | None:
    """A command's own --config, else one given before the command, else the default."""
    if not given:
        ctx = click.get_current_context(silent=True)
        if ctx is not None:
            given = ctx.meta.get(META, {}).get("config")
    return resolve_config(given)


def wants_json() -> bool:
    """--json given before the command (``imctl --json db check``), for commands without admin()."""
    ctx = click.get_current_context(silent=True)
    return ctx is not None and bool(ctx.meta.get(META, {}).get("as_json"))


def admin() -> Admin:
    """The current command's Admin (built once per invocation)."""
    ctx = click.get_current_context()
    cached = ctx.meta.get("imctl.admin")
    if isinstance(cached, Admin):
        return cached
    options: dict[str, Any] = ctx.meta.get(META, {})
    config = resolve_config(options.get("config"))
    try:
        target = resolve_target(config, options.get("url"), options.get("token"))
    except ConfigError as exc:
        raise BadUsage(str(exc)) from None
    result = Admin(target, bool(options.get("as_json")), config)
    ctx.meta["imctl.admin"] = result
    return result


def user_ref(value: str) -> int | str:
    """A user on the command line: an id if all digits, else a login name."""
    return int(value) if value.isdecimal() else value


def quote(value: str | int) -> str:
    """A user or name for a path segment."""
    return urllib.parse.quote(str(value), safe="")
