"""Messages a connection pipelines are saved in batches (DB_SAVE_MSGS) across real
processes: stored and acked in the order sent, and one refused message (to a user
that does not exist) fails alone, its neighbours in the same frame unaffected."""

from __future__ import annotations

import asyncio

from common.commands import Cmd
from tests.e2e.conftest import Cluster
from tests.support.ttclient import TTClient

GHOST = 4_000_000  # no such user


async def test_pipelined_messages_are_saved_in_order_and_a_refused_one_fails_alone(
    cluster: Cluster, clients: list[TTClient]
) -> None:
    alice = await cluster.client("alice", "msg-1")
    bob = await cluster.client("bob", "msg-2")
    clients += [alice, bob]
    base = 50_000  # client msg ids of this test only
    # All sent at once (one turn of this client, so the gateway reads them together).
    sends = [
        asyncio.ensure_future(
            alice.send_text(GHOST if i == 7 else bob.user_id, b"batch %d" % i, client_msg_id=base + i)
        )
        for i in range(20)
    ]
    refused = sends.pop(7)
    acks = await asyncio.gather(*sends)
    # The marker: sent after everything, acked after everything before it was answered.
    marker = await alice.send_text(bob.user_id, b"marker", client_msg_id=base + 99)
    assert not refused.done()  # refused: no ack (TeamTalk's ack cannot say "refused"), ever
    refused.cancel()
    ids = [ack.msg_id for ack in acks]
    assert ids == sorted(ids) and len(set(ids)) == 19 and marker.msg_id > ids[-1]
    pushed = [await bob.next_push(Cmd.MSG_DATA) for _ in range(20)]
    assert [p.msg_id for p in pushed] == [*ids, marker.msg_id]
    assert [p.msg_data for p in pushed] == [b"batch %d" % i for i in range(20) if i != 7] + [b"marker"]
