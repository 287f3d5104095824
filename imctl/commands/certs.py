"""``imctl secret`` and ``imctl certs``: what the links of a cluster authenticate with."""

from __future__ import annotations

import secrets
from pathlib import Path

import click

from imctl.client import BadUsage, CliError


def new_secret() -> str:
    """A fresh cluster secret: 32 random bytes, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(32)


@click.command("secret")
def secret() -> None:
    """Print a fresh cluster secret, e.g. for: imctl secret > /etc/imcluster/secret

    Every server of the cluster needs the same one ([cluster] secret_file);
    make the file readable by the servers' user only (chmod 600, or 640
    with their group). Rotation: docs/link-security.md.
    """
    click.echo(new_secret())


@click.command("certs")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--node",
    "nodes",
    multiple=True,
    required=True,
    metavar="NAME",
    help="A node to make a certificate for (repeatable); its node_id, e.g. db-1.",
)
@click.option("--days", default=825, show_default=True, help="Validity of the node certificates.")
@click.option("--renew", is_flag=True, help="Reissue node certificates that already exist.")
def certs(directory: Path, nodes: tuple[str, ...], days: int, renew: bool) -> None:
    """Make a cluster CA (once) and a certificate per node, for mutual TLS on internal links.

    Writes DIRECTORY/ca.pem and ca.key (reused when present) and NAME.pem and
    NAME.key per node (keys 0600). Give each server ca.pem and its own pair:

    \b
      [cluster]
      tls_ca = "/etc/imcluster/tls/ca.pem"
      tls_cert = "/etc/imcluster/tls/db-1.pem"
      tls_key = "/etc/imcluster/tls/db-1.key"

    Keep ca.key off the servers: it only signs new nodes.
    """
    from imctl.certs import issue

    try:
        ca_created, issued = issue(directory, list(nodes), days=days, renew=renew)
    except ValueError as exc:
        raise BadUsage(str(exc)) from None
    except OSError as exc:
        raise CliError(f"{directory}: {exc}") from None
    click.echo(f"{'created' if ca_created else 'reused'} CA {directory / 'ca.pem'}")
    for node in issued:
        state = "created" if node.created else "kept (--renew reissues)"
        click.echo(f"{state} {node.name}: {node.cert} {node.key}")
