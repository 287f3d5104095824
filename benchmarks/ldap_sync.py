"""How long `imctl sync ldap` takes: a dry run, the first apply, a second apply.

    python -m benchmarks.ldap_sync [--users 1000]

Starts a real slapd (tests/ldap/slapd.py) holding ``--users`` people in 20
team OUs nested under 4 division OUs, and a one-gateway cluster on SQLite,
then times `imctl sync ldap` three times: the dry run (read and plan), the
first `--apply` (every department and user created) and a second `--apply`
(which must plan nothing). Needs Debian's slapd.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from click.testing import CliRunner

from imctl.cli import main as imctl
from imctl.cluster import LocalCluster
from tests.ldap import slapd
from tests.ldap.conftest import DIRECTORY, PEOPLE, write_config

TOKEN = "bench-token"


def directory(users: int) -> str:
    entries = [DIRECTORY]
    for d in range(4):
        entries.append(slapd.entry(f"ou=div{d},{PEOPLE}", objectClass="organizationalUnit", ou=f"div{d}"))
    for t in range(20):
        entries.append(
            slapd.entry(f"ou=team{t},ou=div{t % 4},{PEOPLE}", objectClass="organizationalUnit", ou=f"team{t}")
        )
    for i in range(users):
        ou = f"ou=team{i % 20},ou=div{i % 4},{PEOPLE}"
        entries.append(
            slapd.person(f"user{i:05d}", ou, f"User Number{i}", displayName=f"U{i}", mail=f"u{i}@example.com")
        )
    return "\n".join(entries)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=1000)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="imldap-"))
    server = slapd.start(tmp / "slapd", directory(args.users))
    database = f"sqlite:///{tmp}/im.db"
    local = LocalCluster(tmp, None, gateways=1, base_port=0, database_url=database, files=False)
    local.extra = {"login": {"admin_token": TOKEN}}
    local.start()
    try:
        url = f"http://127.0.0.1:{local.by_name('login-1').info['http_port']}"
        config = write_config(tmp / "imcluster.toml", server)

        def sync(*extra: str) -> str:
            started = time.monotonic()
            argv = ["--url", url, "--token", TOKEN, "--config", str(config), "--json", "sync", "ldap", *extra]
            result = CliRunner().invoke(imctl, argv)
            assert result.exit_code == 0, result.output
            out = json.loads(result.stdout)
            took = time.monotonic() - started
            return f"{took:.2f} s, {out['plan']['changes']} changes, {len(out.get('failed', []))} failed"

        print(f"{args.users} users in 24 OUs, SQLite, one gateway")
        print(f"  dry run:      {sync()}")
        print(f"  first apply:  {sync('--apply')}")
        print(f"  second apply: {sync('--apply')}")
    finally:
        local.stop()
        server.stop()


if __name__ == "__main__":
    main()
