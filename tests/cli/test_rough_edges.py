"""imctl's rough edges on a live cluster (MariaDB + Redis): the URL forms
--url takes, groups by name, who is online by name, and the system sender
that no list shows."""

from __future__ import annotations

from click.testing import CliRunner

from common.commands import Cmd
from common.pb import buddy_pb2
from imctl.cli import main
from tests.cli.conftest import AdminCluster
from tests.support.ttclient import TTClient


def test_bad_urls_are_one_line_usage_errors(cluster: AdminCluster) -> None:
    for bad in ("notaurl", "ftp://127.0.0.1:8080", "http://", "http://127.0.0.1:99999", "127.0.0.1:8080"):
        result = cluster.imctl("status", url=bad)
        assert result.exit_code == 2, (bad, result.output)
        assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
        (line,) = result.stderr.strip().splitlines()
        assert "--url" in line and repr(bad) in line
    env = cluster.env(IMCLUSTER_URL="notaurl", IMCLUSTER_TOKEN="x")
    from_env = CliRunner().invoke(main, ["status"], env=env)
    assert from_env.exit_code == 2 and "$IMCLUSTER_URL" in from_env.stderr


def test_the_url_imctl_up_prints_is_accepted(cluster: AdminCluster) -> None:
    # `imctl up` prints "Admin API: http://127.0.0.1:PORT/admin/v1 ...".
    for url in (f"{cluster.url}/admin/v1", f"{cluster.url}/admin/v1/", f"{cluster.url}/", cluster.url):
        result = cluster.imctl("--json", "user", "list", url=url)
        assert result.exit_code == 0, (url, result.output)


def test_groups_are_named_by_id_or_unique_name(cluster: AdminCluster) -> None:
    payroll = cluster.json("group", "create", "payroll", "alice", "bob")["group"]
    first = cluster.json("group", "create", "ops", "alice")["group"]
    second = cluster.json("group", "create", "ops", "carol")["group"]
    shown = cluster.json("group", "show", "payroll")["group"]
    assert shown["id"] == payroll["id"] and set(shown["members"]) == {
        cluster.users["alice"],
        cluster.users["bob"],
    }
    assert cluster.json("group", "show", str(payroll["id"]))["group"]["id"] == payroll["id"]
    ambiguous = cluster.imctl("group", "show", "ops")
    assert ambiguous.exit_code == 1
    assert f"ids {first['id']}, {second['id']}" in ambiguous.stderr and "give the id" in ambiguous.stderr
    missing = cluster.imctl("group", "show", "nosuch")
    assert missing.exit_code == 1 and "no group named 'nosuch'" in missing.stderr
    added = cluster.json("group", "add", "payroll", "carol")
    assert added["added"] == [cluster.users["carol"]]
    assert cluster.imctl("group", "dismiss", "ops", "--yes").exit_code == 1  # still ambiguous


async def test_online_shows_names_and_nicks(cluster: AdminCluster, clients: list[TTClient]) -> None:
    alice = await cluster.client("alice", "msg-1")
    dave = await cluster.client("dave", "msg-2")
    clients += [alice, dave]
    online = await cluster.ajson("online")
    by_user = {s["user_id"]: s for s in online["sessions"]}
    assert by_user[cluster.users["alice"]]["name"] == "alice"
    assert by_user[cluster.users["alice"]]["nick"] == "Alice"
    assert (by_user[cluster.users["dave"]]["name"], by_user[cluster.users["dave"]]["gateway"]) == (
        "dave",
        "msg-2",
    )
    listing = (await cluster.aimctl("online")).stdout
    header, *rows = listing.splitlines()
    assert header.split()[:4] == ["USER", "NAME", "NICK", "GATEWAY"]
    assert any(row.split()[1:4] == ["alice", "Alice", "msg-1"] for row in rows)
    assert "windows" in listing and "2 users, 2 sessions" in listing


async def test_the_system_sender_appears_in_no_list(cluster: AdminCluster, clients: list[TTClient]) -> None:
    bob = await cluster.client("bob", "msg-2")
    clients.append(bob)
    await cluster.ajson("send", "--from", "system", "--to", "bob", "the server restarts at 22:00")
    notice = await bob.next_push(Cmd.MSG_DATA)
    names = [u["name"] for u in (await cluster.ajson("user", "list"))["users"]]
    assert "system" not in names and "bob" in names
    assert (await cluster.ajson("user", "list", "--search", "syst"))["users"] == []
    everyone = await bob.call(Cmd.ALL_USER_REQ, buddy_pb2.IMAllUserReq(user_id=0, latest_update_time=0))
    assert "system" not in {u.user_real_name for u in everyone.user_list}
    # Who the notice is from is still known to the client that got it.
    sender = await bob.call(
        Cmd.USERS_INFO_REQ, buddy_pb2.IMUsersInfoReq(user_id=0, user_id_list=[notice.from_user_id])
    )
    assert [u.user_real_name for u in sender.user_info_list] == ["system"]
