"""The traffic a scenario runs while its fault happens, and what it proves.

N senders each talk to their own receiver (1:1), a few group members talk
in one group whose members are spread over both gateways, and some users
have a second device (a mobile one) that should see its user's messages
too. Sending is bounded in rate, count and time. Afterwards the figures
are computed from what the clients saw and what MariaDB stored:

- every acked message stored exactly once, with the msg_id its ack gave;
- per receiving connection and conversation, msg_ids strictly increasing
  (no duplicate, nothing out of order);
- every acked message pushed to every recipient connection that stayed up
  the whole run (the sender's other device included, never its own);
- the push latency (arrival minus the sender's ack), p50/p99.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from common.pb import base_pb2
from tests.multihost.client import Acked, Connect, Connection, Resender

SINGLE, GROUP = base_pb2.SESSION_TYPE_SINGLE, base_pb2.SESSION_TYPE_GROUP
LATE = 2.0  # seconds after the ack: the push p99 bound
WARM_UP_TIMEOUT = 30.0
STRAGGLERS_TIMEOUT = 15.0  # past db_proxy's push_give_up (10 s): what is not there by then never comes
STOP_GRACE = 10.0  # a message in flight when sending stops gets this long to be acked


@dataclass(frozen=True)
class Plan:
    pairs: int = 10
    rate: float = 10.0  # messages per second per 1:1 conversation
    group_members: int = 6
    group_senders: int = 2
    group_rate: float = 2.0  # per group sender
    second_devices: int = 3  # of the 1:1 senders, plus the first group sender


def pair_users(plan: Plan) -> list[str]:
    return [f"s{i:02d}" for i in range(plan.pairs)] + [f"r{i:02d}" for i in range(plan.pairs)]


def group_users(plan: Plan) -> list[str]:
    return [f"g{i}" for i in range(plan.group_members)]


@dataclass
class Stream:
    """One sender device's messages to one conversation, in send order."""

    sender: Resender
    to: int
    group: bool
    label: str
    rate: float
    sent: list[bytes] = field(default_factory=list)


@dataclass
class Figures:
    acked: int = 0
    unacked: int = 0
    stored: int = 0
    lost: int = 0
    twice: int = 0
    wrong_id: int = 0
    source_order: int = 0  # acked msg_ids of one sender's conversation not increasing in send order
    pushed: int = 0
    missing: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    echoed: int = 0  # pushed back to the connection that sent it
    late: int = 0
    p50: float = 0.0
    p99: float = 0.0
    latencies: int = 0
    resent: int = 0
    reconnects: int = 0
    stayed_up: int = 0
    connections: int = 0
    recovery: float = 0.0  # fault start to the last ack disturbed (resent, late or missing)
    stall: float = 0.0  # the longest wait between two acks of one conversation
    examples: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"acked {self.acked} (unacked {self.unacked}, resent {self.resent}), stored {self.stored}, "
            f"lost {self.lost}, twice {self.twice}, wrong id {self.wrong_id}, "
            f"source order {self.source_order}, "
            f"pushed {self.pushed}, missing {self.missing}, duplicates {self.duplicates}, "
            f"out of order {self.out_of_order}, echoed {self.echoed}, "
            f"push p50 {self.p50 * 1000:.0f} ms p99 {self.p99 * 1000:.0f} ms (late {self.late} of "
            f"{self.latencies}), stayed up {self.stayed_up}/{self.connections}, "
            f"reconnects {self.reconnects}, "
            f"recovery {self.recovery:.1f}s, stall {self.stall:.1f}s"
        )


Stored = Callable[[str], dict[bytes, tuple[int, int]]]  # tag -> data -> (count, msg_id)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


class Traffic:
    """The devices, the streams, and the run of one scenario."""

    def __init__(
        self,
        connect: Callable[[str, str, int], Connect],
        users: dict[str, int],
        group_id: int,
        plan: Plan,
        tag: str,
    ) -> None:
        self.users = users
        self.group_id = group_id
        self.plan = plan
        self.tag = tag
        self.devices: list[Resender] = []
        self.streams: list[Stream] = []
        members = group_users(plan)
        self.members = [users[m] for m in members]
        mobiles = {f"s{i:02d}" for i in range(plan.second_devices)} | {members[0]}
        names = pair_users(plan) + members
        for n, name in enumerate(names):
            self.devices.append(Resender(name, connect(name, "pc", 1 + n % 2), "pc"))
            if name in mobiles:
                self.devices.append(Resender(name, connect(name, "mobile", 2 - n % 2), "mobile"))
        pc = {d.name: d for d in self.devices if d.device == "pc"}
        for i in range(plan.pairs):
            self.streams.append(Stream(pc[f"s{i:02d}"], users[f"r{i:02d}"], False, f"s{i:02d}", plan.rate))
        for name in members[: plan.group_senders]:
            self.streams.append(Stream(pc[name], group_id, True, f"{name}-group", plan.group_rate))
        self.fault_at = 0.0
        self.started = 0.0
        self.running = 0.0
        self._stop_reconnecting = asyncio.Event()
        self._keepers: list[asyncio.Task[None]] = []

    # -- running ----------------------------------------------------------------

    async def open(self) -> None:
        """Every device logged in, then one message per stream pushed everywhere (the bed is healthy)."""
        self.started = time.monotonic()
        await asyncio.gather(*(device.open() for device in self.devices))
        senders = {id(s.sender) for s in self.streams}
        self._keepers = [
            asyncio.create_task(d.keep_connected(self._stop_reconnecting))
            for d in self.devices
            if id(d) not in senders  # a sender reconnects when it sends
        ]
        for stream in self.streams:
            await self._send(stream, deadline=time.monotonic() + WARM_UP_TIMEOUT)
        waited = time.monotonic() + WARM_UP_TIMEOUT
        while (missing := self.missing_pushes()) and time.monotonic() < waited:
            await asyncio.sleep(0.05)
        if missing or len(self.acked()) != len(self.streams):
            raise RuntimeError(
                f"the bed is not healthy: of {len(self.streams)} warm-up messages {len(self.acked())} acked; "
                f"not pushed: {missing[:5]}"
            )

    async def run(self, seconds: float, fault: Callable[[], Awaitable[None]], fault_after: float) -> None:
        """Send for ``seconds``; ``fault`` starts ``fault_after`` seconds in (it may last on)."""
        start = self.running = time.monotonic()
        deadline = start + seconds

        async def inject() -> None:
            await asyncio.sleep(fault_after)  # the fault's moment in the run, not a wait for an outcome
            self.fault_at = time.monotonic()
            await fault()

        await asyncio.gather(inject(), *(self._stream(s, start, deadline) for s in self.streams))

    async def _stream(self, stream: Stream, start: float, deadline: float) -> None:
        interval = 1.0 / stream.rate
        n = 0
        while (due := start + n * interval) < deadline:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            await self._send(stream, deadline + STOP_GRACE)
            n += 1

    async def _send(self, stream: Stream, deadline: float) -> Acked | None:
        data = f"mh {self.tag} {stream.label} {len(stream.sent)}".encode()
        stream.sent.append(data)
        try:
            async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                return await stream.sender.send(stream.to, data, stream.group)
        except TimeoutError:
            stream.sender.unacked += 1
            return None

    async def finish(self) -> None:
        """Wait (bounded) until every expected push is there, then close everything."""
        waited = time.monotonic() + STRAGGLERS_TIMEOUT
        while self.missing_pushes() and time.monotonic() < waited:
            await asyncio.sleep(0.1)

    async def close(self) -> None:
        self._stop_reconnecting.set()
        for task in self._keepers:
            task.cancel()
        await asyncio.gather(*self._keepers, return_exceptions=True)
        await asyncio.gather(*(d.close() for d in self.devices), return_exceptions=True)

    # -- looking ----------------------------------------------------------------

    def acked(self) -> list[Acked]:
        return [a for d in self.devices for a in d.acked]

    def mine(self, data: bytes) -> bool:
        return data.startswith(f"mh {self.tag} ".encode())

    def stayed_up(self) -> list[Connection]:
        """Connections open since the start and still open: a device that never reconnected."""
        return [
            d.connections[0] for d in self.devices if len(d.connections) == 1 and not d.connections[0].closed
        ]

    def recipients(self, acked: Acked, among: Iterable[Connection]) -> list[Connection]:
        """Of ``among``, the connections ``acked`` must be pushed to."""
        users = set(self.members) if acked.group else {acked.to, acked.connection.client.user_id}
        return [c for c in among if c.client.user_id in users and c is not acked.connection]

    def missing_pushes(self) -> list[tuple[bytes, str]]:
        up = self.stayed_up()
        seen = {id(c): {p.data for p in c.pushes} for c in up}
        return [
            (a.data, f"{c.user}/{c.device}@{c.gateway}")
            for a in self.acked()
            for c in self.recipients(a, up)
            if a.data not in seen[id(c)]
        ]

    def figures(self, stored: dict[bytes, tuple[int, int]], exempt_gateways: set[str]) -> Figures:
        """The scenario's figures; ``exempt_gateways``: whose recipients are not held to the latency bound."""
        f = Figures()
        acked = self.acked()
        f.acked, f.stored = len(acked), len(stored)
        f.unacked = sum(d.unacked for d in self.devices)
        f.resent = sum(d.resent for d in self.devices)
        f.reconnects = sum(d.reconnects for d in self.devices)
        f.lost = sum(1 for a in acked if a.data not in stored)
        f.twice = sum(1 for count, _ in stored.values() if count > 1)
        f.wrong_id = sum(1 for a in acked if a.data in stored and stored[a.data][1] != a.msg_id)
        for stream in self.streams:
            by_data = {a.data: a for a in stream.sender.acked}
            ids = [by_data[d].msg_id for d in stream.sent if d in by_data]
            f.source_order += sum(1 for x, y in itertools.pairwise(ids) if y <= x)
            ats = [
                self.running,
                *(by_data[d].at for d in stream.sent if d in by_data and by_data[d].at > self.running),
            ]
            f.stall = max(f.stall, *(y - x for x, y in itertools.pairwise(ats)), 0.0)
        connections = [c for d in self.devices for c in d.connections]
        f.connections = len(connections)
        for connection in connections:
            highest: dict[tuple[int, int, int], int] = {}
            seen: set[tuple[tuple[int, int, int], int]] = set()
            for push in connection.pushes:
                if not self.mine(push.data):
                    continue
                f.pushed += 1
                if (push.conversation, push.msg_id) in seen:
                    f.duplicates += 1
                    self._example(f, f"duplicate {push.data!r} on {connection.user}/{connection.device}")
                    continue
                seen.add((push.conversation, push.msg_id))
                if push.msg_id < highest.get(push.conversation, 0):
                    f.out_of_order += 1
                    self._example(f, f"out of order {push.data!r} on {connection.user}/{connection.device}")
                highest[push.conversation] = max(push.msg_id, highest.get(push.conversation, 0))
        up = self.stayed_up()
        f.stayed_up = len(up)
        latencies: list[float] = []
        disturbed: list[float] = []
        for a in acked:
            if a.attempts > 1:
                disturbed.append(a.at)
            # Only a first attempt surely stored it from this connection (a resend after a
            # reconnect may find it stored from the old one, and pushed to the new one).
            if a.attempts == 1 and any(p.data == a.data for p in a.connection.pushes):
                f.echoed += 1
                self._example(f, f"echoed {a.data!r} to its sender {a.connection.user}/{a.connection.device}")
            for c in self.recipients(a, up):
                arrival = next((p.at for p in c.pushes if p.data == a.data), None)
                if arrival is None:
                    f.missing += 1
                    disturbed.append(a.at)
                    self._example(
                        f, f"missing {a.data!r} (msg {a.msg_id}) on {c.user}/{c.device}@{c.gateway}"
                    )
                    continue
                if c.gateway in exempt_gateways:
                    continue
                latency = max(0.0, arrival - a.at)
                latencies.append(latency)
                if latency > LATE:
                    f.late += 1
                    disturbed.append(a.at)
                    after = a.at - self.fault_at
                    self._example(
                        f,
                        f"late {latency:.2f}s: {a.data!r} acked at fault+{after:.1f}s, to {c.user}",
                    )
        f.latencies = len(latencies)
        f.p50, f.p99 = percentile(latencies, 0.50), percentile(latencies, 0.99)
        if self.fault_at and disturbed:
            f.recovery = max(0.0, max(disturbed) - self.fault_at)
        return f

    @staticmethod
    def _example(f: Figures, text: str) -> None:
        """At most 3 examples of each kind (the text's first word)."""
        kind = text.split()[0]
        if sum(1 for e in f.examples if e.split()[0] == kind) < 3:
            f.examples.append(text)
