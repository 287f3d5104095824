"""The partition function is a cluster-wide contract: stable, in range, spread evenly."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.conversation import conversation_key
from common.delivery import Entry, partition_of
from common.delivery.log import decode_entry, encode_entry
from common.errors import InvalidArgument
from common.pb import base_pb2

u64 = st.integers(min_value=0, max_value=(1 << 64) - 1)
keys = st.tuples(st.integers(min_value=1, max_value=2), u64, u64)

# Computed once by this function; if one changes, every node would disagree
# with the entries already in the engines: never change them.
GOLDEN = [
    ((1, 1, 2), 16, 13),
    ((1, 100, 200), 16, 6),
    ((2, 7, 0), 16, 3),
    ((2, 123456789, 0), 16, 13),
    ((1, 0, 0), 16, 6),
    ((1, 1, 2), 1024, 589),
    ((1, 100, 200), 1024, 246),
]


@pytest.mark.parametrize(("key", "partitions", "expected"), GOLDEN)
def test_golden_partitions(key: tuple[int, int, int], partitions: int, expected: int) -> None:
    assert partition_of(key, partitions) == expected


def test_the_same_in_another_process() -> None:
    """Unlike hash(), which is salted per process."""
    code = "from common.delivery import partition_of; print(partition_of((1, 100, 200), 1024))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) == partition_of((1, 100, 200), 1024)


@given(keys, st.integers(min_value=1, max_value=4096))
def test_in_range_and_deterministic(key: tuple[int, int, int], partitions: int) -> None:
    p = partition_of(key, partitions)
    assert 0 <= p < partitions
    assert partition_of(key, partitions) == p


@given(st.integers(min_value=1, max_value=1 << 40), st.integers(min_value=1, max_value=1 << 40))
def test_both_sides_of_a_conversation_land_together(a: int, b: int) -> None:
    single = base_pb2.SESSION_TYPE_SINGLE
    assert partition_of(conversation_key(single, a, b), 16) == partition_of(
        conversation_key(single, b, a), 16
    )


@pytest.mark.parametrize("partitions", [4, 16, 64])
def test_consecutive_ids_spread_evenly(partitions: int) -> None:
    # Real ids are small and consecutive: the worst case for a weak hash.
    single, group = base_pb2.SESSION_TYPE_SINGLE, base_pb2.SESSION_TYPE_GROUP
    conversations = [conversation_key(single, a, a + d) for a in range(1, 1001) for d in (1, 2, 7)]
    conversations += [conversation_key(group, 0, g) for g in range(1, 3001)]
    counts = Counter(partition_of(c, partitions) for c in conversations)
    mean = len(conversations) / partitions
    assert set(counts) == set(range(partitions))
    assert max(counts.values()) < mean * 1.3
    assert min(counts.values()) > mean * 0.7


def test_bad_keys_and_counts_are_refused() -> None:
    with pytest.raises(InvalidArgument):
        partition_of((1, 2, 3), 0)
    with pytest.raises(InvalidArgument):
        partition_of((1, -2, 3), 16)
    with pytest.raises(InvalidArgument):
        partition_of((1, 1 << 64, 3), 16)


@given(keys, u64, st.binary(max_size=300), st.integers(min_value=0, max_value=(1 << 32) - 1))
def test_entry_bytes_round_trip(
    key: tuple[int, int, int], msg_id: int, payload: bytes, partition: int
) -> None:
    entry = Entry(partition, key, msg_id, payload)
    assert decode_entry(encode_entry(entry)) == entry


def test_entry_of_uses_the_partition_function() -> None:
    assert Entry.of((1, 100, 200), 5, b"x", 16) == Entry(6, (1, 100, 200), 5, b"x")
