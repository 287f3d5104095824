"""When a route server answers pushes (route_server.readiness), on a fake clock."""

from __future__ import annotations

from route_server.readiness import LostGateways, Readiness

SETTLE = 3.0


def test_refuses_for_the_detection_time_after_start() -> None:
    readiness = Readiness(started_at=100.0, settle_time=SETTLE)
    assert readiness.refusal(100.0) == "no gateway linked"
    readiness.linked("gw-1", 100.0)
    readiness.snapshot("gw-1")
    assert "joining" in (readiness.refusal(100.0) or "")
    assert not readiness.ready(102.9)
    assert readiness.ready(103.0)


def test_a_linked_gateway_without_its_snapshot_holds_readiness() -> None:
    readiness = Readiness(started_at=0.0, settle_time=SETTLE)
    readiness.linked("gw-1", 1.0)
    readiness.linked("gw-2", 2.0)
    readiness.snapshot("gw-1")
    assert readiness.refusal(4.5) == "no snapshot yet from gw-2"
    readiness.snapshot("gw-2")
    assert readiness.ready(4.5)
    # Settled is not for ever: a gateway linking later holds it again, briefly.
    readiness.linked("gw-3", 10.0)
    assert not readiness.ready(10.1)
    readiness.unlinked("gw-3")
    assert readiness.ready(10.1)


def test_a_gateway_that_never_sends_its_snapshot_blocks_one_detection_time_only() -> None:
    readiness = Readiness(started_at=0.0, settle_time=SETTLE)
    readiness.linked("mute", 5.0)
    assert readiness.awaiting(7.9) == ["mute"]
    assert readiness.ready(8.0)


def test_lost_gateways_users_are_held_until_it_is_back_or_the_hold_passed() -> None:
    lost = LostGateways(hold=SETTLE)
    lost.lost("gw-1", {1, 2}, 10.0)
    lost.lost("gw-2", set(), 10.0)  # nobody to hold
    assert lost.held([1, 3], 10.5) == {1}
    lost.back("gw-1")
    assert lost.held([1, 2], 10.6) == set()
    lost.lost("gw-1", {1}, 20.0)
    assert lost.held([1], 22.9) == {1}
    assert lost.held([1], 23.0) == set()


def test_losing_every_gateway_is_joining_again() -> None:
    readiness = Readiness(started_at=0.0, settle_time=SETTLE)
    readiness.linked("gw-1", 0.0)
    readiness.linked("gw-2", 0.0)
    readiness.snapshot("gw-1")
    readiness.snapshot("gw-2")
    assert readiness.ready(3.0)
    readiness.unlinked("gw-1")
    readiness.linked("gw-1", 5.0)  # one relinks while another stays: no new window
    readiness.snapshot("gw-1")
    assert readiness.ready(5.0)
    readiness.unlinked("gw-1")
    readiness.unlinked("gw-2")  # cut off from all of them (or frozen)
    assert readiness.refusal(40.0) == "no gateway linked"  # a db_proxy may be back first
    readiness.linked("gw-2", 40.0)  # healed: the first one back
    readiness.snapshot("gw-2")
    assert "joining" in (readiness.refusal(42.9) or "")
    readiness.linked("gw-1", 41.0)
    assert readiness.refusal(43.0) == "no snapshot yet from gw-1"
    readiness.snapshot("gw-1")
    assert readiness.ready(43.0)
