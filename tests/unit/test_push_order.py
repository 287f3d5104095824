"""msg_server.push_order: whatever the deliveries, a connection gets each id once, in order."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from msg_server.push_order import DUPLICATE, WRITE, Decision, Gap, PushOrder

CONV = (1, 7, 9)


def written(decision: Decision, msg_id: int) -> list[int]:
    """What the gateway writes for a decision, a gap filled from storage."""
    if decision == DUPLICATE:
        return []
    if isinstance(decision, Gap):
        return [*decision.missing, msg_id]
    assert decision == WRITE
    return [msg_id]


def test_first_then_next_duplicate_and_gap() -> None:
    order = PushOrder()
    assert order.highest(CONV) is None
    # No baseline: the ids before may have been stored since the login.
    assert order.decide(CONV, 5) == Gap((1, 2, 3, 4), first=True)
    assert order.highest(CONV) == 5
    assert order.decide(CONV, 5) == DUPLICATE
    assert order.decide(CONV, 3) == DUPLICATE
    assert order.decide(CONV, 6) == WRITE
    assert order.decide(CONV, 9) == Gap((7, 8))
    assert order.highest(CONV) == 9
    assert order.decide(CONV, 8) == DUPLICATE


def test_first_is_a_write_when_nothing_can_be_before() -> None:
    order = PushOrder()
    assert order.decide(CONV, 1) == WRITE
    assert order.decide(CONV, 2) == WRITE


def test_first_looks_back_at_most_max_gap() -> None:
    order = PushOrder(max_gap=100)
    assert order.decide(CONV, 500) == Gap(tuple(range(400, 500)), first=True)


def test_a_gap_longer_than_the_look_back_is_fetched_whole() -> None:
    """A gateway frozen 10 s at 10 msg/s: a connection that stayed up misses >100 ids,
    all of which are fetched (the look back bound is for a first push only)."""
    order = PushOrder(max_gap=100)
    order.decide(CONV, 1)
    assert order.decide(CONV, 252) == Gap(tuple(range(2, 252)))


def test_gap_is_bounded_older_ids_skipped_and_counted() -> None:
    order = PushOrder(max_gap=100, max_fill=2000)
    order.decide(CONV, 1)
    decision = order.decide(CONV, 3000)
    assert isinstance(decision, Gap)
    assert decision.missing == tuple(range(1000, 3000))
    assert decision.skipped == 998


def test_own_message_ahead_of_a_peer_message_on_its_way() -> None:
    order = PushOrder()
    order.decide(CONV, 3)
    # The client's ack of 5 is relayed before the peer's 4 is pushed.
    assert order.raise_to(CONV, 5) == 0
    assert order.highest(CONV) == 3
    assert order.decide(CONV, 5) == DUPLICATE  # the origin echo, if any
    assert order.decide(CONV, 4) == WRITE
    assert order.highest(CONV) == 5
    assert order.decide(CONV, 6) == WRITE


def test_gap_does_not_refetch_own_messages() -> None:
    order = PushOrder()
    order.decide(CONV, 1)
    order.raise_to(CONV, 3)
    order.raise_to(CONV, 4)
    assert order.decide(CONV, 6) == Gap((2, 5))


def test_own_message_without_baseline_is_not_a_baseline() -> None:
    order = PushOrder()
    order.raise_to(CONV, 5)
    assert order.highest(CONV) is None
    assert order.decide(CONV, 4) == Gap((1, 2, 3), first=True)
    assert order.highest(CONV) == 5


def test_a_hole_given_up_to_bound_ahead_ranges_is_owed_not_skipped() -> None:
    """Past max_ahead ranges the oldest hole is no longer waited for, but it is not
    lost: its late push is still written, or the next push fetches it first."""
    order = PushOrder(max_ahead=2)
    order.decide(CONV, 1)
    assert order.raise_to(CONV, 3) == 0
    assert order.raise_to(CONV, 5) == 0
    assert order.raise_to(CONV, 7) == 0  # the hole at 2 is owed
    assert order.highest(CONV) == 3
    assert order.decide(CONV, 2) == WRITE  # its late push: not a duplicate
    assert order.decide(CONV, 2) == DUPLICATE
    assert order.decide(CONV, 3) == DUPLICATE  # its own
    assert order.decide(CONV, 8) == Gap((4, 6))


def test_owed_holes_are_fetched_before_the_next_push() -> None:
    order = PushOrder(max_ahead=2)
    order.decide(CONV, 1)
    for own in (3, 5, 7, 9):
        assert order.raise_to(CONV, own) == 0
    assert order.highest(CONV) == 5  # 2 and 4 owed
    assert order.decide(CONV, 4) == Gap((2,))
    assert order.decide(CONV, 10) == Gap((6, 8))
    assert order.decide(CONV, 2) == DUPLICATE


def test_owed_holes_are_bounded_and_counted() -> None:
    order = PushOrder(max_ahead=1, max_owed=2)
    order.decide(CONV, 1)
    skipped = [order.raise_to(CONV, own) for own in (3, 5, 7, 9)]
    # Holes 2, 4, 6 given up in turn; only 2 owed ranges are kept: 2 is skipped, counted.
    assert skipped == [0, 0, 0, 1]
    assert order.decide(CONV, 2) == DUPLICATE
    assert order.decide(CONV, 10) == Gap((4, 6, 8))


def test_an_own_ack_inside_an_owed_hole() -> None:
    order = PushOrder(max_ahead=1)
    order.decide(CONV, 1)
    order.raise_to(CONV, 4)
    order.raise_to(CONV, 6)  # 2..3 owed
    assert order.raise_to(CONV, 3) == 0  # the ack of 3 came late: not fetched back
    assert order.decide(CONV, 7) == Gap((2, 5))


def test_without_a_baseline_ahead_ranges_are_bounded_by_forgetting_the_oldest() -> None:
    """No baseline: nothing is owed (the look back of the first push decides); an own
    range forgotten risks a copy of the connection's own message, never a loss."""
    order = PushOrder(max_ahead=2)
    for own in (3, 5, 7):
        assert order.raise_to(CONV, own) == 0
    assert order.highest(CONV) is None
    assert order.decide(CONV, 8) == Gap((1, 2, 3, 4, 6), first=True)


def test_conversations_are_bounded_lru() -> None:
    order = PushOrder(max_conversations=3)
    for group in range(1, 4):
        order.decide((2, group, 0), 10)
    order.decide((2, 1, 0), 11)  # 1 is now the most recent
    order.decide((2, 4, 0), 10)  # evicts 2
    assert len(order) == 3
    assert order.highest((2, 2, 0)) is None
    assert order.highest((2, 1, 0)) == 11


def owing(order: PushOrder, key: tuple[int, int, int]) -> None:
    """``key`` owes id 2 (own sends at 3 and 5 past one ahead range)."""
    order.decide(key, 1)
    order.raise_to(key, 3)
    assert order.raise_to(key, 5) == 0


def test_a_conversation_forgotten_is_rather_one_owing_nothing() -> None:
    order = PushOrder(max_conversations=2, max_ahead=1)
    owing(order, (2, 1, 0))
    order.decide((2, 2, 0), 10)
    order.decide((2, 3, 0), 10)  # evicts 2, not the older 1 (it owes 2)
    assert order.highest((2, 2, 0)) is None
    assert order.decide((2, 1, 0), 2) == WRITE


def test_owed_ids_forgotten_with_their_conversation_are_counted() -> None:
    order = PushOrder(max_conversations=2, max_ahead=1)
    owing(order, (2, 1, 0))
    owing(order, (2, 2, 0))
    assert order.decide((2, 3, 0), 1) == Gap((), skipped=1, first=True)  # 1 forgotten: its 2
    assert order.highest((2, 1, 0)) is None
    owing(order, (2, 4, 0))  # evicts 3 (owes nothing)
    assert order.raise_to((2, 5, 0), 9) == 1  # evicts 2 (all owe): its 2


# -- fuzz -----------------------------------------------------------------------------

events = st.lists(
    st.tuples(st.sampled_from(["push", "own"]), st.integers(min_value=1, max_value=60)),
    max_size=200,
)


@settings(max_examples=400, deadline=None)
@given(events)
def test_whatever_the_order_writes_are_increasing_once_and_complete(script: list[tuple[str, int]]) -> None:
    """Any order and duplication of pushes and own sends: strictly increasing, no duplicate,
    no own message written, and nothing missing after the first write (gaps are small here).
    Two ahead ranges only: holes given up to stay bounded are owed, still written."""
    order = PushOrder(max_ahead=2)
    out: list[int] = []
    own: set[int] = set()
    own_before_baseline: set[int] = set()
    pushed: set[int] = set()
    for kind, msg_id in script:
        if kind == "own":
            if msg_id in pushed or (out and msg_id <= out[-1]):
                # An id is either the connection's own or someone else's; and
                # an ack racing behind a later push finds its id filled already.
                continue
            own.add(msg_id)
            if not out:
                own_before_baseline.add(msg_id)
            assert order.raise_to(CONV, msg_id) == 0
        else:
            if msg_id in own:
                continue
            pushed.add(msg_id)
            out += written(order.decide(CONV, msg_id), msg_id)
    assert out == sorted(set(out)), out
    # Own ids sent before any baseline may be forgotten to bound the ahead ranges:
    # the first push's look back then writes a copy (never a loss). Others: never.
    copies = own & set(out)
    assert copies <= own_before_baseline, copies
    if out:
        # Gaps are filled (a first looks back too) and holes given up are owed:
        # every id up to the highest pushed is there, except the connection's own.
        expected = [i for i in range(1, max(pushed) + 1) if i not in own or i in copies]
        assert out == expected


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=5),
            st.sampled_from(["push", "own"]),
            st.integers(min_value=1, max_value=400),
        ),
        max_size=300,
    )
)
def test_many_conversations_bounded_still_increasing(script: list[tuple[int, str, int]]) -> None:
    """Tight bounds (LRU of 3, gaps of 10, 2 ahead and 2 owed ranges): still never a duplicate or a step back
    while a conversation is remembered."""
    order = PushOrder(max_conversations=3, max_gap=10, max_fill=10, max_ahead=2, max_owed=2)
    out: dict[int, list[int]] = {}
    for conv, kind, msg_id in script:
        key = (2, conv, 0)
        if kind == "own":
            order.raise_to(key, msg_id)
            continue
        remembered = order.highest(key) is not None
        ids = written(order.decide(key, msg_id), msg_id)
        if not remembered:
            out[conv] = []  # forgotten (or new): a first again
        out.setdefault(conv, []).extend(ids)
        assert len(order) <= 3
        assert out[conv] == sorted(set(out[conv])), out[conv]


def test_an_unacked_send_is_known_once_and_the_memory_of_them_is_bounded() -> None:
    from msg_server.push_order import MAX_UNACKED

    order = PushOrder()
    conversation = (1, 7, 9)
    assert not order.own_unacked(conversation, b"hello")
    order.unacked(conversation, b"hello")
    assert not order.own_unacked((1, 7, 10), b"hello")  # another conversation
    assert not order.own_unacked(conversation, b"hello!")
    assert order.own_unacked(conversation, b"hello")
    assert not order.own_unacked(conversation, b"hello")  # one send, one stored copy
    for i in range(MAX_UNACKED + 5):
        order.unacked(conversation, b"m%d" % i)
    assert not order.own_unacked(conversation, b"m0")  # the oldest forgotten
    assert order.own_unacked(conversation, b"m%d" % (MAX_UNACKED + 4))
