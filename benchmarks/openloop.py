"""Open loop 1:1: every sender sends on a fixed schedule whatever the acks say.

The pairs are benchmarks.messages.Pair (senders on msg-1, receivers on msg-2): the same
message format, ack bookkeeping and correctness checks as the closed loop. One scheduler
task sends every message that is due (message k of pair i at start + (k + i / P) / r, with
r the per-pair rate), so the offered rate does not depend on how fast the server answers.
A TeamTalk client gets no ack for a refused message: whatever has no ack when the grace
period after the last send is over counts as refused/unacked. Bounded in count (rate x
seconds) and in time (seconds + grace).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import Counter
from typing import Any

from benchmarks.measure import cpu_percent, cpu_snapshot, percentile
from benchmarks.messages import BODY_SIZE, DRAIN_TIMEOUT, Pair
from benchmarks.servers import Target
from common.commands import Cmd
from common.pb import base_pb2, message_pb2

LATE_MS = 1000.0  # an ack later than this is "late" (the overload target: none)
TICK = 0.002  # the scheduler's period: messages due within it go out together


def _body(pair: Pair, seq: int, sent: int) -> bytes:
    assert pair.sender is not None and pair.receiver is not None
    head = b"%d:%d:%d:%d:" % (pair.rep, pair.index, seq, sent)
    return message_pb2.IMMsgData(
        from_user_id=pair.sender.user_id,
        to_session_id=pair.receiver.user_id,
        msg_id=seq + 1,
        create_time=0,
        msg_type=base_pb2.MSG_TYPE_SINGLE_TEXT,
        msg_data=head + b"x" * max(0, BODY_SIZE - len(head)),
    ).SerializeToString()


async def open_loop(
    target: Target, pairs: list[Pair], rep: int, rate: float, seconds: float, grace: float
) -> dict[str, Any]:
    """Offer ``rate`` msgs/s for ``seconds`` over ``pairs``; figures and checks of what was acked."""
    per_pair = max(1, round(rate * seconds / len(pairs)))
    for pair in pairs:
        pair.reset(rep, per_pair)
    interval = len(pairs) / rate  # seconds between two messages of one pair
    total = per_pair * len(pairs)
    cpu_before = cpu_snapshot(target)
    start = time.perf_counter()
    start_ns = time.perf_counter_ns()
    # every (due time, pair, seq), in time order: pair i is offset by i/P of an interval
    n = len(pairs)
    sent_total = 0
    k = 0  # round of messages (seq)
    i = 0  # next pair within the round
    while sent_total < total:
        now = time.perf_counter() - start
        while sent_total < total:
            due = (k + i / n) * interval
            if due > now:
                break
            pair = pairs[i]
            conn = pair.sender
            if conn is not None and not conn.closed:
                sent = time.perf_counter_ns()
                pair.sent_ns[k] = sent
                pair.sent += 1
                pair.inflight += 1
                conn.request(Cmd.MSG_DATA, _body(pair, k, sent), functools.partial(pair._on_ack, k))
            sent_total += 1
            i += 1
            if i == n:
                i, k = 0, k + 1
        if time.perf_counter() - start > seconds * 3 + 5:  # the client cannot keep up: stop
            break
        await asyncio.sleep(TICK)
    send_end = time.perf_counter()
    # wait for the acks (bounded by the grace period): what has none by then was refused
    deadline = send_end + grace
    while time.perf_counter() < deadline:
        if all(p.acked() == p.sent for p in pairs):
            break
        await asyncio.sleep(0.02)
    end = time.perf_counter()
    cpu = cpu_percent(cpu_before, cpu_snapshot(target), end - start)
    # what is acked now is what counts; an ack arriving later is unacked (refused or too late)
    frozen = [list(p.ack_id) for p in pairs]
    frozen_ns = [list(p.ack_ns) for p in pairs]
    acked_in_time = sum(1 for f in frozen for x in f if x)
    # then for the deliveries of what was acked (bounded): an acked message still missing
    # after DRAIN_TIMEOUT counts as lost
    deadline = time.perf_counter() + DRAIN_TIMEOUT
    while time.perf_counter() < deadline:
        if all(
            len({q for q, _, _ in p.deliveries if f[q]}) >= sum(1 for x in f if x)
            for p, f in zip(pairs, frozen, strict=True)
        ):
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.2)  # late duplicates
    late_after_grace = sum(1 for p in pairs for x in p.ack_id if x) - acked_in_time
    for p, ids, stamps in zip(pairs, frozen, frozen_ns, strict=True):
        p.ack_id, p.ack_ns = ids, stamps
    acks = [p.ack_ns[s] for p in pairs for s in range(p.sent) if p.ack_id[s]]
    last_ack = max(acks, default=start_ns)
    checks: Counter[str] = Counter()
    for pair in pairs:
        checks.update(pair.check())
    lat = sorted((p.ack_ns[s] - p.sent_ns[s]) / 1e6 for p in pairs for s in range(p.sent) if p.ack_id[s])
    send_seconds = send_end - start
    wall = max(send_seconds, (last_ack - start_ns) / 1e9)
    acked = checks["acked"]
    return {
        "offered_per_s": rate,
        "offered_actual_per_s": checks["sent"] / send_seconds if send_seconds > 0 else float("nan"),
        "sent": checks["sent"],
        "acked": acked,
        "acked_per_s": acked / wall if wall > 0 else float("nan"),
        "ack_p50_ms": percentile(lat, 50),
        "ack_p99_ms": percentile(lat, 99),
        "ack_max_ms": lat[-1] if lat else float("nan"),
        "late_acks": sum(1 for x in lat if x > LATE_MS),
        "unacked": checks["sent"] - acked,
        "acked_after_grace": late_after_grace,
        "checks": dict(checks),
        "cpu_percent": cpu,
        "histogram_ms": histogram(lat),
    }


HIST_EDGES = [0.5 * 2 ** (i / 2) for i in range(30)]  # 0.5 ms .. ~16 s, half-octave bins


def histogram(sorted_ms: list[float]) -> list[int]:
    """Counts per HIST_EDGES bin (the last bin takes everything above)."""
    counts = [0] * len(HIST_EDGES)
    j = 0
    for x in sorted_ms:
        while j < len(HIST_EDGES) - 1 and x > HIST_EDGES[j]:
            j += 1
        counts[j] += 1
    return counts
