"""Balancer: registration, ownership by link, and the choice of gateway."""

from __future__ import annotations

from login_server.balancer import Balancer, Gateway, PickError


def register(
    balancer: Balancer,
    node_id: str,
    owner: object,
    *,
    prior_ip: str = "10.0.0.1",
    backup_ip: str = "",
    port: int = 8000,
    max_connections: int = 100,
    now: float = 0.0,
    connections: int = 0,
) -> Gateway | None:
    return balancer.register(
        node_id,
        owner=owner,
        prior_ip=prior_ip,
        backup_ip=backup_ip,
        port=port,
        max_connections=max_connections,
        started_at=1_700_000_000,
        now=now,
        connections=connections,
    )


def picked(balancer: Balancer) -> str:
    result = balancer.pick()
    assert isinstance(result, Gateway), result
    return result.node_id


def test_no_gateway_is_code_1() -> None:
    assert Balancer().pick() is PickError.NO_GATEWAY
    assert int(PickError.NO_GATEWAY) == 1


def test_all_full_is_code_2() -> None:
    balancer = Balancer()
    a, b = object(), object()
    register(balancer, "a", a, max_connections=5)
    register(balancer, "b", b, max_connections=0)
    balancer.report_load("a", owner=a, connections=5, now=1.0)
    assert balancer.pick() is PickError.ALL_FULL
    assert int(PickError.ALL_FULL) == 2


def test_least_loaded_under_limit_wins() -> None:
    balancer = Balancer()
    owners = {name: object() for name in "abc"}
    for name, owner in owners.items():
        register(balancer, name, owner, max_connections=50)
    balancer.report_load("a", owner=owners["a"], connections=10, now=1.0)
    balancer.report_load("b", owner=owners["b"], connections=50, now=1.0)  # full
    balancer.report_load("c", owner=owners["c"], connections=20, now=1.0)
    assert picked(balancer) == "a"


def test_ties_go_to_smallest_node_id_then_alternate() -> None:
    balancer = Balancer()
    a, b = object(), object()
    register(balancer, "b", b)
    register(balancer, "a", a)
    assert [picked(balancer) for _ in range(4)] == ["a", "b", "a", "b"]


def test_hand_outs_spread_a_storm_until_the_next_report() -> None:
    balancer = Balancer()
    a, b = object(), object()
    register(balancer, "a", a)
    register(balancer, "b", b)
    balancer.report_load("a", owner=a, connections=0, now=1.0)
    balancer.report_load("b", owner=b, connections=10, now=1.0)
    choices = [picked(balancer) for _ in range(30)]
    # a takes the first 10 on its own, then they alternate.
    assert choices[:10] == ["a"] * 10
    assert choices.count("a") == 20 and choices.count("b") == 10
    # The report is the truth and replaces the estimate.
    balancer.report_load("a", owner=a, connections=3, now=2.0)
    gateway = balancer.get("a")
    assert gateway is not None and gateway.load == 3 and gateway.handed_out == 0


def test_hand_outs_count_against_the_limit() -> None:
    balancer = Balancer()
    a = object()
    register(balancer, "a", a, max_connections=2)
    assert picked(balancer) == "a"
    assert picked(balancer) == "a"
    assert balancer.pick() is PickError.ALL_FULL
    balancer.report_load("a", owner=a, connections=1, now=1.0)
    assert picked(balancer) == "a"


def test_backup_ip_falls_back_to_prior_ip() -> None:
    balancer = Balancer()
    register(balancer, "a", object(), prior_ip="192.168.1.5", backup_ip="")
    register(balancer, "b", object(), prior_ip="192.168.1.6", backup_ip="10.1.1.6")
    a, b = balancer.get("a"), balancer.get("b")
    assert a is not None and a.backup_ip == "192.168.1.5"
    assert b is not None and b.backup_ip == "10.1.1.6"


def test_remove_by_owner_only() -> None:
    balancer = Balancer()
    a = object()
    register(balancer, "a", a)
    assert not balancer.remove("a", owner=object())
    assert not balancer.remove("missing", owner=a)
    assert balancer.remove("a", owner=a)
    assert len(balancer) == 0
    assert balancer.pick() is PickError.NO_GATEWAY


def test_new_link_replaces_old_and_old_drop_keeps_it() -> None:
    balancer = Balancer()
    old, new = object(), object()
    register(balancer, "a", old, prior_ip="10.0.0.1", now=1.0)
    balancer.report_load("a", owner=old, connections=40, now=2.0)
    replaced = register(balancer, "a", new, prior_ip="10.0.0.2", now=3.0, connections=5)
    assert replaced is not None and replaced.prior_ip == "10.0.0.1"
    # The old link's late report and its drop do not touch the new entry.
    assert not balancer.report_load("a", owner=old, connections=99, now=4.0)
    assert not balancer.remove("a", owner=old)
    gateway = balancer.get("a")
    assert gateway is not None
    assert (gateway.prior_ip, gateway.connections, gateway.registered_at) == ("10.0.0.2", 5, 3.0)
    assert len(balancer) == 1


def test_same_owner_reregistering_updates_address_and_keeps_counts() -> None:
    balancer = Balancer()
    a = object()
    register(balancer, "a", a, prior_ip="10.0.0.1", now=1.0)
    balancer.report_load("a", owner=a, connections=7, now=2.0)
    assert register(balancer, "a", a, prior_ip="10.0.0.9", port=8001, now=3.0) is None
    gateway = balancer.get("a")
    assert gateway is not None
    assert (gateway.prior_ip, gateway.port, gateway.connections, gateway.registered_at) == (
        "10.0.0.9",
        8001,
        7,
        1.0,
    )


def test_report_for_unknown_gateway_is_ignored() -> None:
    balancer = Balancer()
    assert not balancer.report_load("ghost", owner=object(), connections=1, now=0.0)
    assert len(balancer) == 0


def test_gateways_listed_by_node_id() -> None:
    balancer = Balancer()
    for name in ("msg-3", "msg-1", "msg-2"):
        register(balancer, name, object())
    assert [g.node_id for g in balancer.gateways()] == ["msg-1", "msg-2", "msg-3"]
