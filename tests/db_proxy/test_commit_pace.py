"""Overload shedding in the message workers' queues (issue 12), sans-IO on a fake clock.

A job is refused at admission when the queue ahead of it would take longer than
``max_wait`` to commit at the worker's recent pace; a stalled transaction is the
pace. Simulated open loop at 1.5 to 3 times the capacity: what is admitted is
committed within ``max_wait`` plus one batch (and an expiry tick), and the
worker keeps committing at >= 90% of its capacity.
"""

from __future__ import annotations

import heapq
import math

import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from db_proxy.fair_queue import EXPECTED_WAIT, WORKER_FULL, CommitPace, FairQueue


def paced(batch: int = 4, max_wait: float = 0.3, capacity: int = 1024) -> FairQueue[int]:
    return FairQueue(capacity, 10**9, capacity, 10**9, max_wait=max_wait, pace=CommitPace(batch))


def test_an_idle_worker_admits_whatever_its_pace() -> None:
    q = paced(max_wait=0.3)
    assert q.pace is not None
    q.pace.started(0.0)
    q.pace.finished(5.0)  # one very slow commit
    assert q.push("a", 1, now=6.0) is None  # nothing ahead: it goes first
    assert q.push("b", 2, now=6.0) is None  # and this one in the same batch
    assert q.next_batch(4) == [1, 2]
    q.pace.started(6.0)
    assert q.push("c", 3, now=6.0) == EXPECTED_WAIT  # it would wait for that 5 s batch


def test_admission_stops_where_the_queue_would_take_longer_than_max_wait() -> None:
    q = paced(batch=4, max_wait=0.45)
    assert q.pace is not None
    q.pace.started(0.0)
    # 0.1 s per batch of up to 4: 3 batches fit in 0.45 s, with the headroom
    # (admission aims at 3/4 of it).
    q.pace.finished(0.1)
    outcomes = [q.push(i, i, now=1.0) for i in range(20)]  # 20 conversations, one entry each
    assert outcomes[:16] == [None] * 16  # the 16th starts after 3 batches
    assert outcomes[16:] == [EXPECTED_WAIT] * 4
    assert q.expected_wait(1.0) == pytest.approx(0.4)
    q.next_batch(4)  # a batch leaves: room for 4 more
    assert [q.push(100 + i, i, now=1.0) for i in range(5)] == [None] * 4 + [EXPECTED_WAIT]


def test_a_stalled_transaction_is_the_pace() -> None:
    q = paced(batch=64, max_wait=0.3)
    assert q.pace is not None
    q.pace.started(0.0)
    q.pace.finished(0.01)
    q.pace.started(1.0)  # never finishes
    assert q.push("a", 1, now=1.1) is None  # 0.1 s in: the queue drains by 1.3
    assert q.push("b", 2, now=1.31) == EXPECTED_WAIT  # 0.31 s in: it is stuck
    assert q.push("c", 3, now=1.31) == EXPECTED_WAIT
    assert q.expire(now=1.45) == [1]  # the one admitted waited max_wait: refused then
    q.pace.finished(1.5)
    assert q.push("d", 4, now=1.6) is None  # idle again: admitted


def test_a_flood_is_refused_before_a_newcomer() -> None:
    q = paced(batch=4, max_wait=0.45)
    assert q.pace is not None
    q.pace.started(0.0)
    q.pace.finished(0.1)
    for conv in ("a", "b"):
        assert q.push(conv, 0, now=1.0) is None
    # A conversation's k-th entry waits k rounds of every conversation.
    flood = [q.push("a", i, now=1.0) for i in range(1, 10)]
    assert flood.index(EXPECTED_WAIT) == 7  # its 9th: 8 + 9 * 1 ahead, 4 batches before it
    assert q.push("newcomer", 0, now=1.0) is None  # one round ahead of it


def test_the_pace_is_a_moving_average_of_batch_times() -> None:
    pace = CommitPace(batch_size=8, weight=0.5)
    assert pace.expected_wait(100, now=0.0) == 0.0  # no pace yet: admit (the entry bounds hold)
    for start, took in ((0.0, 0.2), (1.0, 0.1), (2.0, 0.1)):
        pace.started(start)
        pace.finished(start + took)
    assert pace.batch_seconds == pytest.approx(0.125)
    assert pace.expected_wait(15, now=3.0) == pytest.approx(0.125)  # one full batch ahead
    pace.started(4.0)
    assert pace.expected_wait(0, now=4.1) == pytest.approx(0.025)  # the rest of the running one
    assert pace.expected_wait(0, now=4.5) == pytest.approx(0.375)  # stuck: overruns as much again


@settings(max_examples=10, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(
    fixed=st.floats(0.01, 0.03),  # seconds of a commit (fsync)
    per_message=st.floats(0.0001, 0.0005),
    batch=st.sampled_from([16, 64]),
    overload=st.floats(1.5, 3.0),
    max_wait=st.floats(0.2, 0.5),
    conversations=st.integers(20, 400),
)
def test_open_loop_overload_is_refused_and_what_is_admitted_is_fast(
    fixed: float, per_message: float, batch: int, overload: float, max_wait: float, conversations: int
) -> None:
    tick = 0.1  # the expiry loop
    q = FairQueue[float](1024, 10**9, 1024, 10**9, max_wait=max_wait, pace=CommitPace(batch))
    assert q.pace is not None
    full_batch = fixed + per_message * batch
    capacity = batch / full_batch  # messages/s with every batch full
    offered = overload * capacity
    duration = 1.5
    arrivals = int(offered * duration)
    events: list[tuple[float, int, str]] = [(i / offered, i, "arrive") for i in range(arrivals)]
    events += [(k * tick, -k, "expire") for k in range(1, int((duration + 2) / tick) + 1)]
    heapq.heapify(events)
    busy_until: float | None = None
    in_batch: list[float] = []
    latencies: list[float] = []
    refused = {EXPECTED_WAIT: 0, WORKER_FULL: 0, "late": 0}
    seq = arrivals

    def start(now: float) -> None:
        nonlocal busy_until, in_batch, seq
        in_batch = q.next_batch(batch)
        if in_batch:
            assert q.pace is not None
            q.pace.started(now)
            busy_until = now + fixed + per_message * len(in_batch)
            seq += 1
            heapq.heappush(events, (busy_until, seq, "commit"))

    while events:
        now, i, kind = heapq.heappop(events)
        if kind == "arrive":
            reason = q.push(i % conversations, now, now)
            if reason is not None:
                refused[reason] += 1
        elif kind == "expire":
            refused["late"] += len(q.expire(now))
        else:
            q.pace.finished(now)
            latencies += [now - at for at in in_batch]
            busy_until = None
        if busy_until is None:
            start(now)
    committed_in_time = sum(1 for lat in latencies if lat <= 1.0)
    assert max(latencies) <= max_wait + tick + full_batch + 1e-9
    # The first batches are small (no pace yet): judge the steady state.
    assert committed_in_time >= 0.9 * capacity * (duration - 0.2)
    assert refused[EXPECTED_WAIT] + refused[WORKER_FULL] > 0
    # Refusals come at admission, not after waiting (a few while the pace is learnt: small batches first).
    assert refused["late"] <= math.ceil(0.05 * arrivals)
