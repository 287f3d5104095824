"""Connection admission: per-source caps, the pre-login cap and whom it evicts."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from msg_server.admission import FILE_RESERVE, Admission, Caps, effective_max_connections

CAPS = Caps(max_connections=100, per_source=10, unauthenticated=12, unauthenticated_per_source=5)


def test_per_source_caps_close_on_accept() -> None:
    a: Admission[int] = Admission(CAPS)
    verdicts = [a.connect(i, "10.0.0.1").refused for i in range(6)]
    assert verdicts == [""] * 5 + ["unauthenticated_per_source"]
    for i in range(5):
        a.logged_in(i)
    verdicts = [a.connect(i, "10.0.0.1").refused for i in range(10, 16)]
    assert verdicts == [""] * 5 + ["per_source"]  # 10 from one address, logged in or not
    assert a.connect(99, "10.0.0.2").refused == ""


def test_full_pre_login_evicts_the_oldest_of_the_address_holding_the_most() -> None:
    a: Admission[str] = Admission(CAPS)
    for i in range(5):
        assert a.connect(f"x{i}", "10.0.0.1").refused == ""
    for i in range(4):
        a.connect(f"y{i}", "10.0.0.2")
    for i in range(3):
        a.connect(f"z{i}", "10.0.0.3")
    assert a.unauthenticated == 12
    v = a.connect("real", "127.0.0.1")
    assert v.refused == "" and v.evict == "x0"
    v = a.connect("real2", "127.0.0.1")
    assert v.evict == "y0"  # x and y both hold 4 now: y got there first
    v = a.connect("real3", "127.0.0.1")
    assert v.evict == "x1"
    assert a.unauthenticated == 12


def test_the_total_cap_closes_on_accept() -> None:
    a: Admission[int] = Admission(Caps(3, 10, 10, 10))
    assert [a.connect(i, "s").refused for i in range(4)] == ["", "", "", "full"]
    a.gone(0)
    assert a.connect(9, "s").refused == ""


def test_effective_max_connections_leaves_a_reserve() -> None:
    assert effective_max_connections(100_000, 20_000) == 20_000 - FILE_RESERVE
    assert effective_max_connections(1_000, 20_000) == 1_000


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["connect", "login", "gone"]), st.integers(0, 40), st.integers(0, 4)),
        max_size=300,
    )
)
def test_counts_match_a_model_and_the_caps_hold(ops: list[tuple[str, int, int]]) -> None:
    caps = Caps(max_connections=30, per_source=12, unauthenticated=15, unauthenticated_per_source=6)
    a: Admission[int] = Admission(caps)
    live: dict[int, str] = {}
    pending: list[int] = []  # in age order
    for op, key, src in ops:
        source = f"s{src}"
        if op == "connect" and key not in live:
            v = a.connect(key, source)
            if v.refused:
                continue
            if v.evict is not None:
                assert v.evict in pending
                counts = {s: sum(1 for k in pending if live[k] == s) for s in set(live.values())}
                assert counts[live[v.evict]] == max(counts.values())
                pending.remove(v.evict)
                del live[v.evict]
            live[key] = source
            pending.append(key)
        elif op == "login" and key in live:
            a.logged_in(key)
            if key in pending:
                pending.remove(key)
        elif op == "gone":
            a.gone(key)
            live.pop(key, None)
            if key in pending:
                pending.remove(key)
        assert a.connections == len(live) <= caps.max_connections
        assert a.unauthenticated == len(pending) <= caps.unauthenticated
        for s in set(live.values()):
            assert sum(1 for v in live.values() if v == s) <= caps.per_source
            assert sum(1 for k in pending if live[k] == s) <= caps.unauthenticated_per_source
    for key in list(live):
        a.gone(key)
    assert a.sizes() == (0, 0, 0)
