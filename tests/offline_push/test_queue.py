"""The offline push queue on a fake clock: bounds, the retry schedule, and every job ending once."""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from db_proxy.offline_push.provider import Notification, Outcome, Result
from db_proxy.offline_push.queue import (
    DELIVERED,
    EXPIRED,
    NO_DEVICE,
    QUEUE_FULL,
    REJECTED,
    SHUTDOWN,
    TOO_BIG,
    PushQueue,
    size_of,
)

PROVIDERS = ("webhook", "fcm", "apns")


def note(i: int, text: str | None = None) -> Notification:
    return Notification(f"k{i}", 7, 3, 1, 7, i, 1_700_000_000, "Alice", text)


class Log:
    """What the queue recorded, per notification key and provider."""

    def __init__(self) -> None:
        self.ends: list[tuple[str, str, str]] = []

    def __call__(self, provider: str, outcome: str, notification: Notification) -> None:
        self.ends.append((notification.key, provider, outcome))


def make(log: Log, **kw: float) -> PushQueue:
    options = {
        "max_entries": 4,
        "max_bytes": 10_000,
        "retry_initial": 1.0,
        "retry_max": 8.0,
        "retry_for": 60.0,
        **kw,
    }
    return PushQueue(PROVIDERS, record=log, rng=random.Random(1), **options)  # type: ignore[arg-type]


def test_delivered_once() -> None:
    log = Log()
    q = make(log)
    assert q.offer(note(1), ["webhook"], now=0.0) is None
    job = q.take("webhook", 0.0)
    assert job is not None and job.attempts == 1
    assert q.take("webhook", 0.0) is None  # in flight, not handed out twice
    q.finish(job, Result(Outcome.DELIVERED), 0.1)
    assert log.ends == [("k1", "webhook", DELIVERED)]
    assert (q.entries, q.bytes) == (0, 0)


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    log = Log()
    q = make(log, retry_for=1000.0)
    q.offer(note(1), ["webhook"], 0.0)
    now = 0.0
    delays = []
    for _ in range(8):
        job = q.take("webhook", now)
        assert job is not None
        q.finish(job, Result(Outcome.RETRY), now)
        due = q.next_due("webhook")
        assert due is not None
        delays.append(due - now)
        assert q.take("webhook", due - 1e-6) is None  # not before it is due
        now = due
    for attempt, delay in enumerate(delays, start=1):
        backoff = min(8.0, 2.0 ** (attempt - 1))
        assert backoff / 2 <= delay <= backoff
    assert max(delays) <= 8.0


def test_retry_after_is_honoured() -> None:
    log = Log()
    q = make(log)
    q.offer(note(1), ["webhook"], 0.0)
    job = q.take("webhook", 0.0)
    assert job is not None
    q.finish(job, Result(Outcome.RETRY, retry_after=20.0), 1.0)
    assert q.next_due("webhook") == 21.0


def test_rejected_expired_and_bounds() -> None:
    log = Log()
    q = make(log, max_entries=2, retry_for=10.0)
    assert q.offer(note(1), ["webhook", "fcm"], 0.0) is None
    assert q.offer(note(2), ["webhook"], 0.0) is None
    assert q.offer(note(3), ["webhook"], 0.0) == QUEUE_FULL
    assert q.offer(note(4), [], 0.0) == NO_DEVICE
    assert q.offer(note(5, "x" * 20_000), ["webhook"], 0.0) == TOO_BIG
    fcm = q.take("fcm", 0.0)
    assert fcm is not None
    q.finish(fcm, Result(Outcome.REJECTED, "bad token"), 0.0)
    hook = q.take("webhook", 0.0)
    assert hook is not None
    q.finish(hook, Result(Outcome.RETRY, retry_after=30.0), 0.0)  # past retry_for: given up now
    assert q.entries == 1  # note 2 waits
    assert q.take("webhook", 11.0) is None  # note 2 waited too long
    assert Counter(o for _, _, o in log.ends) == Counter(
        {QUEUE_FULL: 1, NO_DEVICE: 1, TOO_BIG: 1, REJECTED: 1, EXPIRED: 2}
    )
    assert (q.entries, q.bytes) == (0, 0)


def test_close_ends_everything_once() -> None:
    log = Log()
    q = make(log)
    q.offer(note(1), ["webhook", "apns"], 0.0)
    job = q.take("webhook", 0.0)
    assert job is not None
    assert q.close() == 2
    q.finish(job, Result(Outcome.DELIVERED), 1.0)  # answered after the close: already counted
    assert sorted(log.ends) == [("k1", "apns", SHUTDOWN), ("k1", "webhook", SHUTDOWN)]
    assert q.offer(note(2), ["webhook"], 2.0) == SHUTDOWN


# -- fuzzed ----------------------------------------------------------------------------------

offer = st.tuples(
    st.just("offer"), st.sets(st.sampled_from(PROVIDERS)), st.integers(0, 3000)
)  # providers, text length
advance = st.tuples(st.just("advance"), st.floats(0.0, 20.0))
take = st.tuples(st.just("take"), st.sampled_from(PROVIDERS))
answer = st.tuples(
    st.just("answer"),
    st.integers(0, 50),  # which in-flight job
    st.sampled_from(list(Outcome)),
    st.one_of(st.none(), st.floats(0.0, 40.0)),
)
ops = st.lists(st.one_of(offer, advance, take, answer), max_size=120)


@settings(max_examples=300, deadline=None)
@given(ops=ops, max_entries=st.integers(1, 6), max_bytes=st.integers(300, 5000))
def test_fuzz_every_job_ends_once_within_bounds(ops: list[tuple], max_entries: int, max_bytes: int) -> None:
    log = Log()
    q = make(log, max_entries=max_entries, max_bytes=max_bytes, retry_initial=0.5, retry_max=4.0)
    now = 0.0
    offered: dict[str, set[str]] = {}
    flying: list = []
    for i, op in enumerate(ops):
        if op[0] == "offer":
            n = note(i, "t" * op[2] or None)
            offered[n.key] = set(op[1])
            why = q.offer(n, sorted(op[1]), now)
            if why is None:
                assert op[1] and size_of(n) <= max_bytes
        elif op[0] == "advance":
            now += op[1]
        elif op[0] == "take":
            job = q.take(op[1], now)
            if job is not None:
                assert job.provider == op[1]
                flying.append(job)
        elif flying:
            job = flying.pop(op[1] % len(flying))
            q.finish(job, Result(op[2], retry_after=op[3]), now)
        assert 0 <= q.entries <= max_entries
        assert 0 <= q.bytes <= max_bytes
    # Drain on the clock: answer everything RETRY until it is delivered or expires.
    for _ in range(1000):
        for job in flying:
            q.finish(job, Result(Outcome.RETRY), now)
        flying = [j for p in PROVIDERS if (j := q.take(p, now)) is not None]
        dues = [d for p in PROVIDERS if (d := q.next_due(p)) is not None]
        if not flying and not dues:
            break
        now = max([now, *dues[:1]]) + 0.01 if not flying else now + 1.0
    q.close()
    assert (q.entries, q.bytes) == (0, 0)
    ends: Counter[tuple[str, str]] = Counter((key, provider) for key, provider, _ in log.ends)
    for key, providers in offered.items():
        if providers:
            assert {p: ends[(key, p)] for p in providers} == dict.fromkeys(providers, 1), key
        else:
            assert ends[(key, "")] == 1
    assert sum(ends.values()) == sum(max(1, len(p)) for p in offered.values())
