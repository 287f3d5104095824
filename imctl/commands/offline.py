"""``--offline``: writing the database directly, and only when no cluster runs.

While a cluster runs its db_proxies are the only writers of its database:
a user written behind their back would miss what the service layer does
with a change (notices to clients, the caches of the other db_proxies). So
the admin commands always go through the admin API, and only an explicit
``imctl user add --offline`` (setting up, before the first ``imctl up``)
writes the configured directory database itself. It is refused when a
cluster is found:

* a ready file (``<server>.ready``, JSON with the server's ``pid``; see
  common/runner.py) in the run directory (``[imctl] run_dir``) whose process
  is alive: ``imctl up`` keeps its servers' there. A server that died
  leaves its file behind; a dead pid does not count.
* anything answering HTTP at the admin URL (a cluster elsewhere, or one
  started with another run directory).
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import click

from common.config import ConfigError, load_config, redact_urls
from imctl.client import API_PATH, BadUsage, CliError
from imctl.cluster import pid_alive
from imctl.context import Admin
from imctl.settings import load_imctl_config

READY_SUFFIX = ".ready"
PROBE_TIMEOUT = 2.0  # seconds; a refused connection answers at once


def _pid_of(ready_file: Path) -> int | None:
    try:
        pid = json.loads(ready_file.read_text()).get("pid")
    except (OSError, ValueError, AttributeError):
        return None  # gone meanwhile, or not one of ours
    return pid if isinstance(pid, int) and pid > 0 else None


def live_servers(run_dir: Path) -> list[str]:
    """``name (pid N)`` of each server whose ready file in ``run_dir`` names a live process."""
    found = []
    for ready_file in sorted(run_dir.glob(f"*{READY_SUFFIX}")):
        pid = _pid_of(ready_file)
        if pid is not None and pid_alive(pid):
            found.append(f"{ready_file.name.removesuffix(READY_SUFFIX)} (pid {pid})")
    return found


def admin_api_answers(url: str) -> bool:
    """Whether anything answers HTTP at the admin URL (any status: 401 is a cluster too)."""
    try:
        with urllib.request.urlopen(f"{url}{API_PATH}/status", timeout=PROBE_TIMEOUT):
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False


def refuse_if_running(adm: Admin) -> None:
    """CliError if a cluster is found (the module docstring says how)."""
    try:
        run_dir = Path(load_imctl_config(adm.config_path).run_dir)
    except ConfigError as exc:
        raise BadUsage(str(exc)) from None
    running = live_servers(run_dir)
    if running:
        raise CliError(
            f"--offline refused: a cluster is running ({', '.join(running)}, ready files in {run_dir}); "
            "add users through it, without --offline (remove a ready file if its pid is not the cluster's)"
        )
    if admin_api_answers(adm.target.url):
        raise CliError(
            f"--offline refused: a cluster answers at {adm.target.url}; add users through it (no --offline)"
        )


def add_user_offline(
    adm: Admin,
    name: str,
    password: str,
    profile: dict[str, Any],
    department: str | None,
    database_url: str | None,
) -> None:
    """Create a user in the directory database as the cluster's db_proxy would.

    ``profile``: nick, email, tel, real_name (as the admin API takes them).
    """
    from db_proxy.config import DbProxyConfig
    from db_proxy.passwords import hash_password, md5_hex
    from db_proxy.storage import open_store
    from db_proxy.storage.model import DuplicateName

    if department is not None and not department.isdecimal():
        raise BadUsage("with --offline, --department must be an id")
    try:
        url = database_url or load_config(DbProxyConfig, "db_proxy", adm.config_path).directory_url
    except ConfigError as exc:
        raise BadUsage(str(exc)) from None
    refuse_if_running(adm)

    async def create() -> int:
        store = open_store(url)
        await store.open()
        try:
            await store.migrate()
            password_hash = hash_password(md5_hex(password))
            return await store.create_user(name, password_hash, **profile, department_id=int(department or 0))
        finally:
            await store.close()

    try:
        user_id = asyncio.run(create())
    except DuplicateName:
        raise CliError(f"user {name!r} already exists") from None
    except Exception as exc:
        raise CliError(f"cannot create {name!r} in {url}: {exc}") from None
    shown = redact_urls(url)
    adm.show(
        {"user": {"id": user_id, "name": name}, "database": shown},
        lambda: click.echo(f"created user {name!r} with id {user_id} in {shown} (offline)"),
    )
