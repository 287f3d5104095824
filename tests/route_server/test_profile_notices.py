"""Profile changes through a route server on real links: batched per tick to every
gateway, the last value per (user, kind); anything else is refused and counted.

The flusher task is not running on the bed: the test calls ``send_batches`` (one
tick), so batching is the test's to decide."""

from __future__ import annotations

from prometheus_client import REGISTRY

from common.commands import Cmd
from common.pb import buddy_pb2, internal_pb2
from tests.route_server.conftest import Bed, online, until


def sign_change(user_id: int, sign: str, conn_id: int = 1) -> internal_pb2.RouteProfileChange:
    body = buddy_pb2.IMSignInfoChangedNotify(changed_user_id=user_id, sign_info=sign).SerializeToString()
    return internal_pb2.RouteProfileChange(
        user_id=user_id,
        command_id=Cmd.SIGN_INFO_CHANGED_NOTIFY,
        body=body,
        origin=internal_pb2.Origin(gateway_id="gw-a", conn_id=conn_id),
    )


def notice_drops(reason: str) -> float:
    value = REGISTRY.get_sample_value("imcluster_route_profile_notices_dropped_total", {"reason": reason})
    return value or 0.0


async def test_changes_are_coalesced_into_one_batch_per_tick_for_every_gateway(bed: Bed) -> None:
    a = await bed.gateway("gw-a", [online(1, 1)])
    b = await bed.gateway("gw-b", [online(2, 1)])
    superseded = notice_drops("superseded")
    assert a.link is not None
    for i in range(50):
        assert a.link.send(Cmd.ROUTE_PROFILE_CHANGE, sign_change(1, f"sign {i}"))
    await until(lambda: bed.server.notices.pending == 1 and notice_drops("superseded") == superseded + 49)
    bed.server.send_batches()
    for gateway in (a, b):
        batch = await gateway.next(Cmd.ROUTE_PROFILE_BATCH)
        assert len(batch.changes) == 1
        got = batch.changes[0]
        assert (got.user_id, got.origin.gateway_id, got.origin.conn_id) == (1, "gw-a", 1)
        assert buddy_pb2.IMSignInfoChangedNotify.FromString(got.body).sign_info == "sign 49"
    assert bed.server.notices.pending == 0


async def test_only_profile_notices_are_relayed(bed: Bed) -> None:
    a = await bed.gateway("gw-a", [online(1, 1)])
    bad = notice_drops("bad_command")
    assert a.link is not None
    forged = sign_change(1, "x")
    forged.command_id = Cmd.KICK_USER  # a gateway may not make the route server broadcast anything else
    assert a.link.send(Cmd.ROUTE_PROFILE_CHANGE, forged)
    await until(lambda: notice_drops("bad_command") == bad + 1)
    assert bed.server.notices.pending == 0
