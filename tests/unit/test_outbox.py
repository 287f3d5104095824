"""The connection's outbox on plain bytes: order kept, counts exact, pieces bounded."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from common.outbox import Outbox

items = st.lists(st.tuples(st.binary(max_size=300), st.booleans()), max_size=30)


@given(items, st.integers(min_value=1, max_value=200))
def test_takes_hand_out_what_was_put_in_order_and_the_counts_follow(
    puts: list[tuple[bytes, bool]], limit: int
) -> None:
    outbox = Outbox()
    for data, unsolicited in puts:
        outbox.put(data, unsolicited)
    assert outbox.unsolicited == sum(len(d) for d, u in puts if u)
    assert outbox.replies == sum(len(d) for d, u in puts if not u)
    out = bytearray()
    while (piece := outbox.take(limit)) is not None:
        assert 0 < len(piece) <= limit
        out += piece
        assert outbox.queued == outbox.unsolicited + outbox.replies >= 0
    assert bytes(out) == b"".join(d for d, _ in puts)
    assert not outbox and outbox.unsolicited == outbox.replies == 0
