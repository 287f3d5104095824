"""``imctl sync ldap`` against a real slapd and a real cluster (SQLite; MariaDB + Redis).

One directory (tests/ldap/conftest.py): ou=people with the nested OUs
eng/dev and sales, six people, dave locked (ppolicy pwdAccountLockedTime).
The tests of a module share the cluster, so each works on users of its own
where it changes them, and the first one runs the first sync.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from common.commands import Cmd
from imctl.certs import issue
from imctl.client import ApiClient, CliError
from imctl.ldap_sync.ldap3_import import ldap3
from tests.ldap import slapd
from tests.ldap.conftest import DEV, DIRECTORY, PEOPLE, SALES, TOKEN, SyncCluster, write_config
from tests.support.ttclient import TTClient

pytestmark = [pytest.mark.ldap, pytest.mark.e2e]
PASSWORD = "synced-user-password"


def test_dry_run_then_apply_then_nothing(
    cluster: SyncCluster, directory: slapd.Slapd, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "imcluster.toml", directory)
    # carol was made here before the first sync: matched by name, then linked.
    carol = cluster.json("user", "add", "carol", "--password", PASSWORD, "--nick", "C")["user"]
    cluster.json("user", "add", "zed", "--password", PASSWORD)  # made here, not in the directory
    before = cluster.users()
    departments_before = cluster.departments()

    dry = cluster.json("sync", "ldap", config=config)
    assert not dry["applied"] and dry["entries"] == 6
    assert sorted(c["name"] for c in dry["plan"]["create"]) == ["ann", "bob", "erin", "frank"]
    assert dry["plan"]["departments"] == ["eng", "sales", "eng/dev"]
    assert dry["plan"]["disabled_not_created"] == 1  # dave: locked, and never here
    (link,) = dry["plan"]["update"]
    assert link["id"] == carol["id"] and link["fields"]["nick"] == "Carol" and link["fields"]["external_id"]
    assert cluster.users() == before and cluster.departments() == departments_before  # nothing changed

    human = cluster.imctl("sync", "ldap", config=config)
    assert human.exit_code == 0, human.output
    assert "create department  eng/dev" in human.output and "dry run: nothing changed" in human.output
    assert slapd.ROOT_PASSWORD not in human.output and "sync-reader-secret" not in human.output

    applied = cluster.json("sync", "ldap", "--apply", config=config)
    assert applied["applied"] and applied["failed"] == [] and applied["done"] == dry["plan"]["changes"]
    users = cluster.users()
    assert users["ann"]["nick"] == "Ann" and users["ann"]["real_name"] == "Ann Archer"
    assert users["ann"]["email"] == "ann@example.com" and users["ann"]["tel"] == "+1 555 0101"
    assert cluster.department_path(users["ann"]["department_id"]) == "eng/dev"
    assert cluster.department_path(users["bob"]["department_id"]) == "eng/dev"
    assert cluster.department_path(users["erin"]["department_id"]) == "sales"
    assert cluster.department_path(users["frank"]["department_id"]) == "default"  # in no OU below the base
    assert users["frank"]["nick"] == "frank"  # no displayName: the login name, as users.create does
    assert users["carol"]["id"] == carol["id"] and users["carol"]["external_id"]
    assert cluster.department_path(users["carol"]["department_id"]) == "eng"
    assert "dave" not in users and users["zed"]["external_id"] == ""
    assert len({u["external_id"] for n, u in users.items() if n != "zed"}) == 5

    again = cluster.json("sync", "ldap", "--apply", config=config)
    assert again["plan"]["changes"] == 0 and "done" not in again
    quiet = cluster.imctl("sync", "ldap", config=config)
    assert "nothing to change" in quiet.output
    assert cluster.users() == users


async def test_changes_in_the_directory_reach_the_cluster(
    cluster: SyncCluster, directory: slapd.Slapd, tmp_path: Path, clients: list[TTClient]
) -> None:
    config = write_config(tmp_path / "imcluster.toml", directory)
    await asyncio.to_thread(cluster.json, "sync", "ldap", "--apply", config=config)
    first = cluster.users()
    with directory.admin() as ldap:
        assert ldap.modify(
            f"uid=bob,{DEV}",
            {
                "displayName": [(ldap3.MODIFY_REPLACE, ["Robert"])],
                "mail": [(ldap3.MODIFY_REPLACE, ["rb@example.com"])],
            },
        )
        assert ldap.modify_dn(f"uid=ann,{DEV}", "uid=anne")  # a rename: the same entry, entryUUID kept
        assert ldap.modify_dn(f"uid=frank,{PEOPLE}", "uid=frank", new_superior=SALES)  # moved
        assert ldap.modify(f"uid=dave,{SALES}", {"pwdAccountLockedTime": [(ldap3.MODIFY_DELETE, [])]})
        assert ldap.delete(f"uid=erin,{SALES}")
    # erin is online when she leaves the directory: disabling her kicks her.
    cluster.json("user", "passwd", "erin", "--password", PASSWORD)
    erin = TTClient()
    clients.append(erin)
    await erin.connect("127.0.0.1", cluster.gateway_port())
    assert (await erin.login("erin", PASSWORD)).result_code == 0

    result = await asyncio.to_thread(cluster.json, "sync", "ldap", "--apply", config=config)
    assert result["failed"] == []
    plan = result["plan"]
    assert [c["name"] for c in plan["create"]] == ["dave"]  # unlocked: now made
    assert [(d["name"], d["reason"].split(" (")[0]) for d in plan["disable"]] == [
        ("erin", "gone from the directory")
    ]
    kick = await erin.next_push(Cmd.KICK_USER, timeout=10)
    assert kick.user_id == first["erin"]["id"]
    await asyncio.wait_for(erin.closed.wait(), 10)

    users = cluster.users()
    assert users["bob"]["nick"] == "Robert" and users["bob"]["email"] == "rb@example.com"
    assert users["bob"]["id"] == first["bob"]["id"]
    assert "ann" not in users and users["anne"]["id"] == first["ann"]["id"]  # renamed, same user
    assert users["anne"]["external_id"] == first["ann"]["external_id"]
    assert cluster.department_path(users["frank"]["department_id"]) == "sales"
    assert users["erin"]["disabled"] and users["erin"]["id"] == first["erin"]["id"]  # kept, not deleted
    assert not users["dave"]["disabled"]
    # erin cannot log in again; anne logs in under her new name once she has a password.
    again = TTClient()
    clients.append(again)
    await again.connect("127.0.0.1", cluster.gateway_port())
    assert (await again.login("erin", PASSWORD)).result_code != 0
    anne = TTClient()
    clients.append(anne)
    await anne.connect("127.0.0.1", cluster.gateway_port())
    assert (await anne.login("anne", "")).result_code != 0  # made by sync: no password works
    cluster.json("user", "passwd", "anne", "--password", PASSWORD)
    anne = TTClient()
    clients.append(anne)
    await anne.connect("127.0.0.1", cluster.gateway_port())
    assert (await anne.login("anne", PASSWORD)).result_code == 0

    nothing = await asyncio.to_thread(cluster.json, "sync", "ldap", "--apply", config=config)
    assert nothing["plan"]["changes"] == 0


def test_disabled_filter_and_attribute_departments(
    cluster: SyncCluster, directory: slapd.Slapd, tmp_path: Path
) -> None:
    cluster.json("sync", "ldap", "--apply", config=write_config(tmp_path / "all.toml", directory))
    with directory.admin() as ldap:
        for uid, dept in (("ann", "R&D/Compilers"), ("bob", "R&D")):
            assert ldap.modify(f"uid={uid},{DEV}", {"departmentNumber": [(ldap3.MODIFY_ADD, [dept])]})
        assert ldap.modify(f"uid=bob,{DEV}", {"employeeType": [(ldap3.MODIFY_ADD, ["left"])]})
    config = write_config(
        tmp_path / "imcluster.toml",
        directory,
        department_from="departmentNumber",
        disabled_filter="(employeeType=left)",
        user_filter="(&(objectClass=inetOrgPerson)(departmentNumber=*))",
        page_size=1,  # one entry a page: the paged search goes on to the end
    )
    result = cluster.json("sync", "ldap", config=config)
    assert result["entries"] == 2
    plan = result["plan"]
    assert plan["departments"] == ["R&D", "R&D/Compilers"]
    assert {u["name"]: u["department"] for u in plan["update"]} == {"ann": "R&D/Compilers", "bob": "R&D"}
    reasons = {d["name"]: d["reason"].split(" (")[0] for d in plan["disable"]}
    assert reasons["bob"] == "disabled in the directory"
    assert reasons["carol"] == reasons["frank"] == "gone from the directory"  # not found by this filter
    assert "zed" not in reasons  # made here: left alone


def test_directory_errors_are_one_line_and_an_exit_code(
    cluster: SyncCluster, directory: slapd.Slapd, tmp_path: Path
) -> None:
    bad_password = write_config(tmp_path / "a.toml", directory)
    (tmp_path / "ldap-password").write_text("wrong\n")
    refused = cluster.imctl("sync", "ldap", config=bad_password)
    assert refused.exit_code == 4 and "bind" in refused.output and "wrong" not in refused.output
    assert "Traceback" not in refused.output

    unreachable = write_config(
        tmp_path / "b.toml", directory, url=f"ldap://127.0.0.1:{slapd.free_port()}", timeout=2
    )
    result = cluster.imctl("sync", "ldap", config=unreachable)
    assert result.exit_code == 3 and "cannot reach the LDAP server" in result.output

    empty = write_config(tmp_path / "c.toml", directory, user_filter="(uid=nobody-at-all)")
    result = cluster.imctl("sync", "ldap", "--apply", config=empty)
    assert result.exit_code == 2 and "found no entries" in result.output

    missing_base = write_config(tmp_path / "d.toml", directory, base_dn="ou=nowhere,dc=example,dc=com")
    result = cluster.imctl("sync", "ldap", config=missing_base)
    assert result.exit_code == 2 and "noSuchObject" in result.output

    (tmp_path / "e.toml").write_text("[ldap]\nbase_dn = 'dc=example,dc=com'\n")
    result = cluster.imctl("sync", "ldap", config=tmp_path / "e.toml")
    assert result.exit_code == 2 and "ldap.url is not set" in result.output

    env_password = write_config(tmp_path / "f.toml", directory, bind_password_file="")
    result = cluster.imctl("sync", "ldap", config=env_password, IMCLUSTER_LDAP_PASSWORD="sync-reader-secret")
    assert result.exit_code == 0, result.output


def test_start_tls_and_ldaps_verify_the_server(cluster: SyncCluster, tmp_path: Path) -> None:
    if not slapd.available():
        pytest.skip("Debian's slapd is not installed")
    issue(tmp_path / "tls", ["127.0.0.1"])
    ca = str(tmp_path / "tls" / "ca.pem")
    server = slapd.start(tmp_path / "slapd", DIRECTORY, tls_dir=tmp_path / "tls")
    try:
        start_tls = write_config(tmp_path / "a.toml", server, start_tls=True, ca_file=ca)
        assert cluster.json("sync", "ldap", config=start_tls)["entries"] == 6
        ldaps = write_config(tmp_path / "b.toml", server, url=server.ldaps_url, ca_file=ca)
        assert cluster.json("sync", "ldap", config=ldaps)["entries"] == 6
        # Not signed by a CA the system trusts: refused, in one line.
        untrusted = write_config(tmp_path / "c.toml", server, url=server.ldaps_url)
        result = cluster.imctl("sync", "ldap", config=untrusted)
        assert result.exit_code == 3 and "Traceback" not in result.output, result.output
    finally:
        server.stop()


def test_only_a_directory_user_may_come_without_a_password(cluster: SyncCluster) -> None:
    # Last in the module: the user made here would be "gone" for the syncs above.
    api = ApiClient(cluster.url, TOKEN)
    with pytest.raises(CliError, match="password is required"):
        api.request("POST", "/users", {"name": "nopw"})
    made = api.request("POST", "/users", {"name": "nopw", "external_id": "x-1"})["user"]
    assert made["external_id"] == "x-1" and api.request("GET", "/users/nopw")["user"] == made
    changed = api.request("PATCH", "/users/nopw", {"external_id": "x-2", "name": "withpw"})["user"]
    assert (changed["id"], changed["name"], changed["external_id"]) == (made["id"], "withpw", "x-2")
