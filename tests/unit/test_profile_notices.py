"""Profile notices coalesced on a fake clock: the last value always arrives, and a
watcher hears of each (user, kind) at most once per status_batch_interval."""

from __future__ import annotations

import math
from collections import Counter, defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from common.commands import Cmd
from common.pb import buddy_pb2, internal_pb2
from route_server.notices import PENDING_BYTES, PENDING_ENTRIES, SUPERSEDED, ProfileNotices

SIGN, AVATAR = Cmd.SIGN_INFO_CHANGED_NOTIFY, Cmd.AVATAR_CHANGED_NOTIFY
INTERVAL = 0.1


def change(user_id: int, value: str, command_id: int = SIGN) -> internal_pb2.RouteProfileChange:
    if command_id == SIGN:
        body = buddy_pb2.IMSignInfoChangedNotify(changed_user_id=user_id, sign_info=value).SerializeToString()
    else:
        body = buddy_pb2.IMAvatarChangedNotify(changed_user_id=user_id, avatar_url=value).SerializeToString()
    return internal_pb2.RouteProfileChange(user_id=user_id, command_id=command_id, body=body)


def value_of(c: internal_pb2.RouteProfileChange) -> str:
    if c.command_id == SIGN:
        return buddy_pb2.IMSignInfoChangedNotify.FromString(c.body).sign_info
    return buddy_pb2.IMAvatarChangedNotify.FromString(c.body).avatar_url


def new_notices(max_entries: int = 1000, max_bytes: int = 1 << 20) -> tuple[ProfileNotices, Counter[str]]:
    drops: Counter[str] = Counter()
    notices = ProfileNotices(max_entries, max_bytes, on_drop=lambda reason, n: drops.update({reason: n}))
    return notices, drops


# (time in ms, user, kind) of each change; its value is its index, so the last is the largest.
changes_in_time = st.lists(
    st.tuples(st.integers(0, 3000), st.integers(1, 4), st.sampled_from([SIGN, AVATAR])),
    min_size=1,
    max_size=300,
)


@settings(max_examples=150, deadline=None)
@given(changes_in_time)
def test_last_value_arrives_and_at_most_one_notice_per_interval(events: list[tuple[int, int, int]]) -> None:
    events = sorted(events, key=lambda e: e[0])
    notices, drops = new_notices()
    delivered: dict[tuple[int, int], list[str]] = defaultdict(list)
    tick = 1  # the flusher wakes at tick * INTERVAL (a fake clock: no sleeping)

    def flush_until(now: float) -> None:
        nonlocal tick
        while tick * INTERVAL <= now:
            batch = notices.take()
            for c in batch.changes if batch is not None else ():
                delivered[(c.user_id, c.command_id)].append(value_of(c))
            tick += 1

    for i, (ms, user, kind) in enumerate(events):
        flush_until(ms / 1000)
        assert notices.offer(change(user, str(i), kind))
    flush_until(events[-1][0] / 1000 + INTERVAL)
    assert notices.pending == 0 and notices.pending_bytes == 0

    for key in {(u, k) for _, u, k in events}:
        times = [ms / 1000 for ms, u, k in events if (u, k) == key]
        last = max(i for i, (_, u, k) in enumerate(events) if (u, k) == key)
        assert delivered[key][-1] == str(last)  # the final value always arrives
        assert len(delivered[key]) <= math.ceil((times[-1] - times[0]) / INTERVAL) + 1
    # Every change went out or was coalesced into a later one (counted).
    assert sum(len(v) for v in delivered.values()) + drops[SUPERSEDED] == len(events)


def test_a_thousand_changes_in_a_second_cost_a_few_notices() -> None:
    notices, drops = new_notices()
    sent = []
    for i in range(1000):  # one every millisecond, the flusher every 100 ms
        notices.offer(change(7, f"sign {i}"))
        if (i + 1) % 100 == 0 and (batch := notices.take()) is not None:
            sent += [value_of(c) for c in batch.changes]
    assert len(sent) == 10 and sent[-1] == "sign 999"
    assert drops[SUPERSEDED] == 990


def test_pending_is_bounded_in_entries_and_bytes_and_drops_are_counted() -> None:
    notices, drops = new_notices(max_entries=3, max_bytes=1 << 20)
    assert all(notices.offer(change(u, "x")) for u in (1, 2, 3))
    assert not notices.offer(change(4, "x"))  # a fourth user: no room
    assert notices.offer(change(2, "newer"))  # a pending pair still takes its newer value
    assert drops == Counter({PENDING_ENTRIES: 1, SUPERSEDED: 1})
    batch = notices.take()
    assert batch is not None and [(c.user_id, value_of(c)) for c in batch.changes] == [
        (1, "x"),
        (3, "x"),
        (2, "newer"),
    ]

    notices, drops = new_notices(max_entries=1000, max_bytes=1000)
    accepted = sum(notices.offer(change(u, "s" * 200)) for u in range(1, 20))
    assert 0 < accepted < 19 and notices.pending_bytes <= 1000
    assert drops[PENDING_BYTES] == 19 - accepted
    assert notices.take() is not None and notices.take() is None
