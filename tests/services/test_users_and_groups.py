"""The group service asks the directory which users exist (no join): a
deleted or unknown user joins no group; deleting a user takes it out of its
groups, tells their members, and every db_proxy forgets it."""

from __future__ import annotations

from pathlib import Path

from common.commands import Cmd, OneWays
from common.pb import base_pb2, group_pb2, internal_pb2
from common.rpc import Commands
from db_proxy.notices import ADMIN_ORIGIN
from db_proxy.server import invalidations
from tests.db_proxy.conftest import LINK
from tests.services.conftest import database_url, node_on


async def test_unknown_and_deleted_users_join_no_group(engine: str, tmp_path: Path) -> None:
    async with database_url(engine, tmp_path) as url, node_on(url, url) as node:
        alice, bob, carol = [await node.user(n) for n in ("alice", "bob", "carol")]
        groups = node.services.groups
        assert await node.services.known.missing([carol]) == set()  # known (cached) now
        await node.call("users.delete", user=carol)
        created = await groups.create(alice, "team", "", base_pb2.GROUP_TYPE_NORMAL, [bob, carol, 99_999])
        assert created.result.members == (alice, bob)
        change = await groups.change_members(created.result, alice, [carol, 99_999], [])
        assert (change.result.changed, change.notices) == ([], ())
        res = await node.call("users.delete", user=bob)
        assert res["user"]["id"] == bob


async def test_deleting_a_user_leaves_its_groups_and_is_announced(engine: str, tmp_path: Path) -> None:
    async with database_url(engine, tmp_path) as url, node_on(url, url) as node:
        alice, bob, carol = [await node.user(n) for n in ("alice", "bob", "carol")]
        group = (await node.call("groups.create", name="g", creator=alice, members=[bob, carol]))["group"]
        node.frames.clear()
        await node.call("users.delete", user=bob)
        (deliver, invalidate) = node.frames
        command_id, message, _ = deliver
        assert command_id == Cmd.ROUTE_DELIVER and isinstance(message, internal_pb2.RouteDeliver)
        assert (list(message.user_ids), message.origin) == (sorted([alice, bob, carol]), ADMIN_ORIGIN)
        notify = group_pb2.IMGroupChangeMemberNotify.FromString(message.body)
        assert (notify.user_id, notify.change_type, notify.group_id) == (
            alice,
            base_pb2.GROUP_MODIFY_TYPE_DEL,
            group["id"],
        )
        assert (list(notify.cur_user_id_list), list(notify.chg_user_id_list)) == ([alice, carol], [bob])
        assert invalidate[0] == Cmd.DB_INVALIDATE
        assert invalidate[1] == internal_pb2.DbInvalidate(user_ids=[bob], from_node="db-test")
        assert await node.store.group_ids_of(bob) == []
        assert await node.services.known.missing([bob]) == {bob}


async def test_an_invalidation_from_another_db_proxy_is_forgotten(engine: str, tmp_path: Path) -> None:
    async with database_url(engine, tmp_path) as url, node_on(url, url) as node:
        alice = await node.user("alice")
        known = node.services.known
        assert await known.missing([alice]) == set()
        await node.directory.delete_user(alice)  # by another db_proxy: this one still has it cached
        assert await known.missing([alice]) == set()
        commands: Commands = invalidations(known)
        route = commands.get(OneWays.DB_INVALIDATE.command)
        assert route is not None
        await_or_none = route.handler(LINK, internal_pb2.DbInvalidate(user_ids=[alice], from_node="db-2"))
        assert await_or_none is None
        assert await known.missing([alice]) == {alice}
