"""The multi-host bed comes up and delivers across hosts (the fault scenarios: test_faults.py)."""

from __future__ import annotations

import asyncio
import contextlib

from common.commands import Cmd
from common.pb import message_pb2
from tests.multihost.conftest import MultiHost
from tests.support.ttclient import TTClient

DETECTION_BOUND = 6.0  # seconds: the link layer declares a silent peer dead after 3
PUSH_TIMEOUT = 10.0


async def delivered(receiver: TTClient, data: bytes) -> message_pb2.IMMsgData:
    """The push of ``data`` to ``receiver`` (other pushes stay queued)."""
    async with asyncio.timeout(PUSH_TIMEOUT):
        while True:
            push = await receiver.next_push(Cmd.MSG_DATA)
            assert isinstance(push, message_pb2.IMMsgData)
            if push.msg_data == data:
                return push


async def seen(receiver: TTClient, data: bytes) -> bool:
    """Until ``data`` was pushed to ``receiver`` (bounded), leaving the pushes in place to be counted."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(PUSH_TIMEOUT):
            while not any(m.msg_data == data for m in receiver.pushed(Cmd.MSG_DATA)):
                await asyncio.sleep(0.05)
            return True
    return False


async def test_bed_comes_up_and_delivers_across_gateways(multihost: MultiHost) -> None:
    assert multihost.handed_out(1) == multihost.handed_out(2) == {"msg-1", "msg-2"}
    opened: list[tuple[TTClient, str]] = []
    try:
        # Discovery hands out the least loaded gateway: both get clients.
        for i, name in enumerate(["alice", "bob", "carol", "dave"]):
            opened.append(await multihost.client(name, login_server=1 + i % 2))
        by_gateway = {gateway: client for client, gateway in opened}
        assert set(by_gateway) == {"msg-1", "msg-2"}, [g for _, g in opened]
        sender, receiver = by_gateway["msg-1"], by_gateway["msg-2"]
        ack = await sender.send_text(receiver.user_id, b"across hosts", client_msg_id=1)
        assert ack.msg_id > 0
        push = await delivered(receiver, b"across hosts")
        assert (push.from_user_id, push.msg_id) == (sender.user_id, ack.msg_id)
    finally:
        for client, _ in opened:
            await client.close()
