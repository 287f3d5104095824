"""Profile notices only where they matter: a user changing its sign info or avatar in
a loop reaches those who asked for its status, a bounded number of times with the
final value, and never an unrelated online user (issue 10: 8,308 notices to an
unrelated user in 8 s before).

Markers, not sleeps: after the loop a second user changes its own sign info;
the bystander watches only that user, so once its notice arrives every earlier
batch of the (one) route server has reached the bystander's gateway, and
anything the loop sent it would have arrived before.
"""

from __future__ import annotations

import asyncio
import math
import time

from common.commands import Cmd
from common.pb import base_pb2, buddy_pb2
from route_server.config import RouteServerConfig
from tests.e2e.conftest import Cluster
from tests.support.ttclient import TTClient

INTERVAL = RouteServerConfig().status_batch_interval  # the cluster runs the default
CHANGES = 300
LOOP_DEADLINE = 20.0  # seconds the loop may take at most


async def ask_status(client: TTClient, user_id: int) -> None:
    res = await client.call(Cmd.USERS_STAT_REQ, buddy_pb2.IMUsersStatReq(user_id=0, user_id_list=[user_id]))
    assert [s.user_id for s in res.user_stat_list] == [user_id]


async def change_sign(client: TTClient, sign: str) -> bool:
    res = await client.call(
        Cmd.CHANGE_SIGN_INFO_REQ, buddy_pb2.IMChangeSignInfoReq(user_id=0, sign_info=sign)
    )
    return bool(res.result_code == 0)


async def change_avatar(client: TTClient, url: str) -> bool:
    res = await client.call(Cmd.CHANGE_AVATAR_REQ, buddy_pb2.IMChangeAvatarReq(user_id=0, avatar_url=url))
    return bool(res.result_code == 0)


async def loop_changes(client: TTClient, avatar: bool) -> str:
    """CHANGES changes as fast as they are answered; the value of the last accepted one."""
    last = ""
    async with asyncio.timeout(LOOP_DEADLINE):
        for i in range(CHANGES):
            value = f"http://x/{i}.png" if avatar else f"sign {i}"
            if await (change_avatar(client, value) if avatar else change_sign(client, value)):
                last = value
    assert last, "no change was accepted"
    return last


async def until_value(client: TTClient, command_id: int, user_id: int, value: str) -> list[str]:
    """Every notice of ``user_id`` up to the one carrying ``value`` (bounded in time)."""
    seen: list[str] = []
    async with asyncio.timeout(10):
        while not seen or seen[-1] != value:
            notify = await client.next_push(command_id)
            if notify.changed_user_id == user_id:
                seen.append(
                    notify.avatar_url if command_id == Cmd.AVATAR_CHANGED_NOTIFY else notify.sign_info
                )
    return seen


async def run_loop(cluster: Cluster, clients: list[TTClient], names: list[str], avatar: bool) -> None:
    changer_name, watcher_name, bystander_name, marker_name = names
    changer = await cluster.client(changer_name, "msg-1")
    watcher = await cluster.client(watcher_name, "msg-2")  # across gateways
    bystander = await cluster.client(bystander_name, "msg-1")  # on the changer's own gateway
    marker = await cluster.client(marker_name, "msg-2")
    clients += [changer, watcher, bystander, marker]
    await ask_status(watcher, changer.user_id)
    await ask_status(bystander, marker.user_id)  # its only interest

    command = Cmd.AVATAR_CHANGED_NOTIFY if avatar else Cmd.SIGN_INFO_CHANGED_NOTIFY
    started = time.monotonic()
    final = await loop_changes(changer, avatar)
    seen = await until_value(watcher, command, changer.user_id, final)
    window = time.monotonic() - started
    # One notice per batch tick at most, over the whole window: not one per change.
    assert len(seen) <= math.ceil(window / INTERVAL) + 1, (len(seen), window)

    assert await change_sign(marker, "marker")
    await until_value(bystander, Cmd.SIGN_INFO_CHANGED_NOTIFY, marker.user_id, "marker")
    assert not bystander.pushed(command)
    assert not [
        n for n in bystander.pushed(Cmd.SIGN_INFO_CHANGED_NOTIFY) if n.changed_user_id == changer.user_id
    ]
    assert not changer.pushed(command)  # the changer's own connection has its replies


async def test_sign_info_loop_reaches_watchers_only(cluster: Cluster, clients: list[TTClient]) -> None:
    await run_loop(cluster, clients, ["member20", "member21", "member22", "member23"], avatar=False)


async def test_avatar_loop_reaches_watchers_only(cluster: Cluster, clients: list[TTClient]) -> None:
    await run_loop(cluster, clients, ["member30", "member31", "member32", "member33"], avatar=True)


async def test_the_changers_other_devices_hear_of_it(cluster: Cluster, clients: list[TTClient]) -> None:
    desktop = await cluster.client("member40", "msg-1")
    phone = await cluster.client("member40", "msg-2", base_pb2.CLIENT_TYPE_ANDROID)
    clients += [desktop, phone]
    assert await change_sign(desktop, "from my desktop")
    await until_value(phone, Cmd.SIGN_INFO_CHANGED_NOTIFY, desktop.user_id, "from my desktop")
