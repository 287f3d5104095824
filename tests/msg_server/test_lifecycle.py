"""A gateway cut off from every route server lets its clients go; SIGTERM drains
in order (stop reading, answer what is in flight, close clients, then links)."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from common.commands import Cmd
from common.link import Identity
from common.pb import internal_pb2
from msg_server.config import MsgServerConfig
from msg_server.route_loss import RouteLossRule
from tests.msg_server.conftest import push_1to1, running

GRACE = 0.6


def closed_route_lost() -> float:
    return REGISTRY.get_sample_value("imcluster_gateway_clients_closed_route_lost_total") or 0.0


def test_rule_fires_only_past_the_grace_without_any_link() -> None:
    rule = RouteLossRule(3.0, now=100.0)
    assert not rule.check(False, 102.9)  # never linked since start: counted from the start
    assert rule.check(False, 103.0)
    assert not rule.check(True, 104.0)
    assert not rule.check(False, 105.0)  # lost again at 105
    assert not rule.check(False, 107.9)
    assert rule.check(False, 108.0)
    assert rule.check(False, 120.0)  # and clients that logged in meanwhile go too


def test_grace_defaults_to_the_detection_time() -> None:
    assert MsgServerConfig().route_loss_after == 3.0
    assert MsgServerConfig(route_loss_grace=1.5).route_loss_after == 1.5
    assert MsgServerConfig(route_loss_grace=-1).route_loss_after is None


async def test_route_loss_closes_clients_after_the_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    async with running(monkeypatch, route_loss_grace=GRACE) as bed:
        bob = await bed.client(2)
        before = closed_route_lost()
        loop = asyncio.get_running_loop()
        await bed.route_server.close()
        lost_at = loop.time()
        await asyncio.wait_for(bob.closed.wait(), GRACE + 3)
        elapsed = loop.time() - lost_at
        assert GRACE * 0.9 <= elapsed < GRACE + 2, elapsed
        assert closed_route_lost() - before == 1
        # Logins are not refused meanwhile (discovery decides where clients go).
        again = await bed.client_without_route(2)
        assert again.user_id == 2


async def test_a_short_route_blip_keeps_the_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    async with running(monkeypatch, route_loss_grace=3.0) as bed:
        bob = await bed.client(2)
        link = bed.link
        me = Identity(internal_pb2.ROLE_GATEWAY, "msg-t")
        link.close()  # the gateway re-links at once
        async with asyncio.timeout(5):
            while bed.route_server.linked.get(me) in (None, link):
                await asyncio.sleep(0.02)
        await bed.push(push_1to1(1, 2, 1))
        assert (await bob.next_push(Cmd.MSG_DATA, timeout=5)).msg_id == 1
        assert not bob.closed.is_set()


async def test_without_any_route_server_since_start_clients_go_after_the_grace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with running(monkeypatch, route_up=False, route_loss_grace=GRACE) as bed:
        before = closed_route_lost()
        bob = await bed.client_without_route(2)
        await asyncio.wait_for(bob.closed.wait(), GRACE + 3)
        assert closed_route_lost() - before == 1


async def test_sigterm_answers_in_flight_requests_before_closing_links(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with running(monkeypatch) as bed:
        alice = await bed.client(1)
        bed.db.hold_saves.clear()
        sending = asyncio.create_task(alice.send_text(2, b"in flight", client_msg_id=9))
        await asyncio.wait_for(bed.db.save_arrived.wait(), 5)
        bed.stop.set()  # what SIGTERM does (common.runner)
        # Draining: the client is not read from any more, and not yet let go.
        async with asyncio.timeout(5):
            while not all(c.draining for c in bed.gateway.connections):
                await asyncio.sleep(0.01)
        assert not alice.closed.is_set()
        assert bed.gateway.db_links[0].connected
        bed.db.hold_saves.set()
        ack = await asyncio.wait_for(sending, 5)  # answered over the still-open db link
        assert ack.msg_id == 1
        await asyncio.wait_for(alice.closed.wait(), 5)  # then the client goes
        await asyncio.wait_for(bed.serving, 10)  # and the links, and serve() returns
        assert not bed.gateway.db_links[0].connected
