"""The worker queue's fairness, bounds and expiry, on a fake clock (no event loop).

Issue 10: a flood into one conversation filled its worker's single queue, and
an unrelated conversation sharing the worker lost 29 of 89 messages to
"overloaded". Here each conversation has its own share and batches are formed
round-robin.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from db_proxy.fair_queue import CONVERSATION_FULL, WORKER_FULL, FairQueue

Item = tuple[str, int]  # (conversation, sequence number within it)


def queue(
    capacity: int = 16, share: int = 4, max_bytes: int = 1000, share_bytes: int = 250
) -> FairQueue[Item]:
    return FairQueue(capacity, max_bytes, share, share_bytes, max_wait=2.0)


def test_a_flood_fills_only_its_share_and_another_conversation_is_served_next() -> None:
    q = queue()
    refused = [q.push("flood", ("flood", i), now=0.0) for i in range(100)]
    assert refused.count(None) == 4 and refused[4:] == [CONVERSATION_FULL] * 96
    assert q.push("victim", ("victim", 0), now=0.1) is None
    batch = q.next_batch(limit=2)
    assert ("victim", 0) in batch  # the first batch: one of each, in turn


def test_a_worker_full_of_conversations_refuses_worker_full() -> None:
    q = queue(capacity=8, share=4)
    for conv in ("a", "b"):
        for i in range(4):
            assert q.push(conv, (conv, i), now=0.0) is None
    assert q.push("c", ("c", 0), now=0.0) == WORKER_FULL
    assert q.push("a", ("a", 4), now=0.0) == CONVERSATION_FULL


def test_bytes_are_bounded_per_conversation_and_per_worker() -> None:
    q = queue(capacity=100, share=100, max_bytes=1000, share_bytes=250)
    assert q.push("a", ("a", 0), now=0, size=200) is None
    assert q.push("a", ("a", 1), now=0, size=100) == CONVERSATION_FULL
    assert q.push("b", ("b", 0), now=0, size=750) is None  # alone in its conversation: one gets through
    assert q.push("c", ("c", 0), now=0, size=60) == WORKER_FULL  # 1010 bytes would not fit
    assert q.bytes == 950
    q.next_batch(10)
    assert q.bytes == 0 and len(q) == 0
    # Alone in an empty worker, a body bigger than any bound still gets through.
    assert q.push("d", ("d", 0), now=0, size=5000) is None
    assert q.push("e", ("e", 0), now=0, size=1) == WORKER_FULL


def test_a_barrier_leaves_alone_after_what_came_before_it() -> None:
    q = queue()
    q.push("a", ("a", 0), now=0)
    q.push("a", ("a", 1), now=0, barrier=True)
    q.push("b", ("b", 0), now=0)
    q.push("b", ("b", 1), now=0)
    assert q.next_batch(10) == [("a", 0), ("b", 0), ("b", 1)]
    assert q.next_batch(10) == [("a", 1)]
    assert q.next_batch(10) == []


def test_what_waited_too_long_expires_oldest_first_and_the_rest_stays() -> None:
    q = queue()
    q.push("a", ("a", 0), now=0.0)
    q.push("a", ("a", 1), now=1.0)
    q.push("b", ("b", 0), now=0.5)
    assert q.expire(now=1.9) == []
    assert sorted(q.expire(now=2.6)) == [("a", 0), ("b", 0)]
    assert q.next_batch(10) == [("a", 1)]
    assert len(q) == 0 and q.conversations() == 0


# -- properties --------------------------------------------------------------------------

CONVERSATIONS = ["a", "b", "c", "d", "e"]
operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("push"),
            st.sampled_from(CONVERSATIONS),
            st.integers(0, 120),  # body size
            st.booleans(),  # a barrier (an ordered job)
        ),
        st.tuples(st.just("batch"), st.integers(1, 8)),
        st.tuples(st.just("tick"), st.floats(0.0, 1.5)),
    ),
    max_size=200,
)


@dataclass
class Model:
    """What the queue must hold: the accepted items of each conversation, in order."""

    waiting: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # conv -> [(seq, size)]
    left: dict[str, list[int]] = field(default_factory=dict)  # conv -> seqs, in the order they left

    def leave(self, items: list[Item]) -> None:
        for conv, seq in items:
            head, _ = self.waiting[conv].pop(0)
            assert seq == head, f"{conv}: {seq} left before {head}"
            self.left.setdefault(conv, []).append(seq)


@settings(max_examples=300, deadline=None)
@given(operations)
def test_order_is_kept_and_a_conversation_under_its_share_is_refused_only_when_the_worker_is_full(
    ops: list[tuple[object, ...]],
) -> None:
    capacity, max_bytes, share, share_bytes = 12, 600, 4, 200
    q: FairQueue[Item] = FairQueue(capacity, max_bytes, share, share_bytes, max_wait=2.0)
    model = Model()
    now = 0.0
    seq = 0
    for op in ops:
        if op[0] == "push":
            _, conv, size, barrier = op
            assert isinstance(conv, str) and isinstance(size, int) and isinstance(barrier, bool)
            mine = model.waiting.get(conv, [])
            total = sum(len(v) for v in model.waiting.values())
            total_bytes = sum(s for v in model.waiting.values() for _, s in v)
            seq += 1
            reason = q.push(conv, (conv, seq), now, size, barrier=barrier)
            under_share = len(mine) < share and (not mine or sum(s for _, s in mine) + size <= share_bytes)
            worker_room = total < capacity and (total == 0 or total_bytes + size <= max_bytes)
            if under_share and worker_room:
                assert reason is None
            elif not under_share:
                assert reason == CONVERSATION_FULL
            else:
                assert reason == WORKER_FULL
            if reason is None:
                model.waiting.setdefault(conv, []).append((seq, size))
        elif op[0] == "batch":
            limit = op[1]
            assert isinstance(limit, int)
            ready = [c for c, v in model.waiting.items() if v]
            batch = q.next_batch(limit)
            assert len(batch) <= limit
            model.leave(batch)
            if ready:
                assert batch, "something was waiting and nothing was served"
        else:
            step = op[1]
            assert isinstance(step, float)
            now += step
            expired = q.expire(now)
            model.leave(expired)
        assert len(q) == sum(len(v) for v in model.waiting.values())
        assert q.bytes == sum(s for v in model.waiting.values() for _, s in v)
        assert len(q) <= capacity
    # Everything left eventually, in order, whatever the barriers.
    for _ in range(10 * capacity):
        model.leave(q.next_batch(4))
    assert len(q) == 0 and all(not v for v in model.waiting.values())


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(st.sampled_from(CONVERSATIONS), st.integers(1, 4), min_size=1),
    st.integers(1, 16),
)
def test_a_batch_serves_every_waiting_conversation_before_any_twice(
    backlog: dict[str, int], limit: int
) -> None:
    q: FairQueue[Item] = FairQueue(64, 10_000, 16, 10_000, max_wait=2.0)
    for conv, count in backlog.items():
        for i in range(count):
            assert q.push(conv, (conv, i), now=0.0) is None
    batch = q.next_batch(limit)
    served = [c for c, _ in batch]
    assert len(batch) == min(limit, sum(backlog.values()))
    # One round of every conversation before any gets its second entry.
    first_round = served[: len(backlog)]
    assert len(set(first_round)) == len(first_round)
    if limit >= len(backlog):
        assert set(first_round) == set(backlog)
