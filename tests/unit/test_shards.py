"""The shard function every process must agree on (common.conversation.shard_of)."""

from __future__ import annotations

import subprocess
import sys

from hypothesis import given
from hypothesis import strategies as st

from common.conversation import conversation_key, shard_of

keys = st.one_of(
    st.integers(0, 2**64),
    st.text(max_size=20),
    st.tuples(st.integers(0, 2), st.integers(0, 2**32), st.integers(0, 2**32)),
)


def test_known_values_never_change() -> None:
    # Fixed forever: a change would move conversations between db_proxies
    # (and so their order) in a cluster running two versions.
    assert [shard_of(k, 1000) for k in (0, 7, "alice", (1, 2, 3))] == [485, 806, 806, 618]
    assert shard_of("alice", 2**32) == 3721958806


def test_the_same_in_another_interpreter() -> None:
    """Unlike hash(), which Python salts per process for str."""
    code = "from common.conversation import shard_of; print(shard_of('alice', 97), shard_of((1, 5, 9), 97))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == [str(shard_of("alice", 97)), str(shard_of((1, 5, 9), 97))]


@given(keys, st.integers(1, 64))
def test_in_range(key: int | str | tuple[int, ...], shards: int) -> None:
    assert 0 <= shard_of(key, shards) < shards


def test_conversations_spread_over_shards() -> None:
    counts = [0] * 8
    for a in range(1, 200):
        counts[shard_of(conversation_key(1, a, a + 1), 8)] += 1
    assert min(counts) > 10, counts
