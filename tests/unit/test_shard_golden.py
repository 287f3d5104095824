"""Golden vectors of the cluster's one shard function (common.conversation.shard_of, docs/sharding.md).

Every gateway, db_proxy and version must pick the same shard for a key, so
these values were computed once and are written here literally: if one
changes, conversations move between db_proxies, workers and delivery-log
partitions in a cluster running two versions (and their order with them).
Nothing here may be regenerated to make a change pass.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from common.conversation import ShardKey, shard_of

ROOT = Path(__file__).resolve().parents[2]
COUNTS = (1, 2, 3, 7, 64)

# key -> (the CRC-32 itself, i.e. shard_of(key, 2**32); shard_of(key, n) for n in COUNTS)
GOLDEN: list[tuple[ShardKey, int, list[int]]] = [
    # conversation keys: (session type, smaller id, larger id) for 1:1, (type, group, 0) for groups
    ((1, 3, 7), 4034263724, [0, 0, 2, 1, 44]),
    ((2, 12, 0), 3092822749, [0, 1, 1, 2, 29]),
    ((1, 1, 2), 2208029261, [0, 1, 2, 4, 13]),
    ((1, 0, 2**64 - 1), 1920894578, [0, 0, 2, 1, 50]),
    # user ids
    (0, 3544183485, [0, 1, 0, 3, 61]),
    (1, 2755183147, [0, 1, 1, 3, 43]),
    (42, 3418000330, [0, 0, 1, 3, 10]),
    (1_000_000, 739667546, [0, 0, 2, 2, 26]),
    (2**32, 1633085654, [0, 0, 2, 4, 22]),
    (-1, 3383980904, [0, 0, 2, 3, 40]),
    # login names and node ids
    ("alice", 3721958806, [0, 0, 1, 6, 22]),
    ("Bob", 1779039964, [0, 0, 1, 2, 28]),
    ("", 453955339, [0, 1, 1, 5, 11]),
    ("张三", 2292843681, [0, 1, 0, 2, 33]),
    ("Zoë", 1052307508, [0, 0, 1, 0, 52]),  # precomposed U+00EB: names are not normalised
    ("\udc80", 3267353735, [0, 1, 2, 2, 7]),  # a lone surrogate (surrogatepass): still a shard
    ("db-1", 4138944717, [0, 1, 0, 5, 13]),
]

# The canonical encoding of docs/sharding.md, byte for byte.
ENCODED: list[tuple[ShardKey, bytes]] = [
    ((1, 3, 7), b"t1,3,7"),
    ((2, 12, 0), b"t2,12,0"),
    (42, b"i42"),
    (-1, b"i-1"),
    ("alice", b"salice"),
    ("张三", b"s\xe5\xbc\xa0\xe4\xb8\x89"),
    ("\udc80", b"s\xed\xb2\x80"),
]


def reference_crc32(data: bytes) -> int:
    """CRC-32 as docs/sharding.md defines it, bit by bit (not zlib): the spec, executable."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def test_reference_crc32_is_the_standard_one() -> None:
    assert reference_crc32(b"123456789") == 0xCBF43926  # the CRC-32 (IEEE 802.3) check value


@pytest.mark.parametrize(("key", "crc", "shards"), GOLDEN, ids=[repr(k) for k, _, _ in GOLDEN])
def test_golden(key: ShardKey, crc: int, shards: list[int]) -> None:
    assert shard_of(key, 2**32) == crc
    assert [shard_of(key, n) for n in COUNTS] == shards
    assert shards == [crc % n for n in COUNTS]  # the shard is the CRC modulo the count, nothing more


@pytest.mark.parametrize(("key", "data"), ENCODED, ids=[repr(k) for k, _ in ENCODED])
def test_encoding_is_the_documented_one(key: ShardKey, data: bytes) -> None:
    assert shard_of(key, 2**32) == reference_crc32(data)


def _in_subprocess(seed: str) -> dict[str, object]:
    """The golden table's shards, and hash('alice'), computed in a fresh interpreter."""
    code = (
        "import json, sys\n"
        "from common.conversation import shard_of\n"
        "keys = [tuple(k) if isinstance(k, list) else k for k in json.loads(sys.stdin.read())]\n"
        "print(json.dumps({'shards': [[shard_of(k, n) for n in (2**32, 1, 2, 3, 7, 64)] for k in keys],"
        " 'hash': hash('alice')}))\n"
    )
    keys = json.dumps([key for key, _, _ in GOLDEN])
    env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], input=keys, capture_output=True, text=True, check=True, env=env
    )
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_the_same_under_other_hash_seeds() -> None:
    first, second = _in_subprocess("1"), _in_subprocess("2")
    assert first["hash"] != second["hash"]  # the builtin hash() really differs between them
    expected = [[crc, *shards] for _, crc, shards in GOLDEN]
    assert first["shards"] == second["shards"] == expected
