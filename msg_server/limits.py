"""Rate limits on what one client sends: token buckets, time passed in.

Per connection: messages (``msg_rate``/``msg_burst``) and every request of
any command (``request_rate``/``request_burst``). Per user on this gateway,
over all its connections: messages (``user_msg_rate``/``user_msg_burst``) and
profile changes, avatar and sign info (``profile_rate``/``profile_burst``).
Per source address: login attempts (``login_rate_per_source``/
``login_burst_per_source``), so a guesser reconnecting for every try costs
db_proxy nothing past its rate (the buckets of the MAX_SOURCES most recent
addresses are kept; an address forgotten starts again with a full bucket).
Heartbeats are never limited. The defaults are far above what a person
types; a client past them is a script.

:class:`RateLimits` is sans-IO: it keeps the buckets and answers which limit
a frame is over, given ``now``. Its state is bounded by the live
connections: a connection's buckets go with it, a user's with its last
connection. A bucket is made on its first use (one not made yet is full), so an
idle logged-in connection holds its request bucket only, and its user none.
:class:`Limiter` is the gateway's adapter: it counts a refusal
(``imcluster_gateway_rate_limited_total{kind}``), logs it once per burst per
connection, and answers it the way the command's table entry answers any
refused request (Overloaded); a refused ``IMMsgData`` gets no ack, so the
client resends it later, as after TeamTalk's silent drop. A refusal also
pauses the connection's dispatch (``FrameConnection.pause_dispatch``: the
frames it has sent meanwhile wait in its decoder, and reading stops) until
the bucket that refused has a token again, at most ``HOLD`` seconds. A
flooder is thus slowed to its rate by TCP instead of costing the gateway a
refusal per frame it can write: without the pause, a 1 s hold of reading
alone still let each read (thousands of small frames) be refused frame by
frame while other clients waited, a victim's p99 from 0.4 ms to 5-7 ms.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, TypeVar

from prometheus_client import Counter

from common.codec import Frame
from common.commands import Cmd
from common.errors import Overloaded
from common.throttle import Throttle

if TYPE_CHECKING:
    from msg_server.client import ClientConnection
    from msg_server.config import MsgServerConfig

log = logging.getLogger("client")

RATE_LIMITED = Counter(
    "imcluster_gateway_rate_limited",
    "Client frames refused by a rate limit, by kind: messages (a connection's msg_rate), "
    "user_messages (a user's user_msg_rate over its connections here), requests (a connection's "
    "request_rate), profile (a user's profile_rate: avatar, sign info), logins (an address's "
    "login_rate_per_source). A refused IMMsgData gets no "
    "ack; other requests get their refusal reply.",
    ["kind"],
)

LOG_INTERVAL = 1.0  # seconds between two lines about one connection's rate-limited frames
HOLD = 1.0  # seconds a refused connection waits at most (its heartbeat timeout is minutes)
MAX_SOURCES = 65_536  # addresses whose login bucket is kept (~150 bytes each)

MESSAGES = frozenset({Cmd.MSG_DATA})
PROFILE_CHANGES = frozenset({Cmd.CHANGE_AVATAR_REQ, Cmd.CHANGE_SIGN_INFO_REQ})
NEVER_LIMITED = frozenset({Cmd.HEARTBEAT})


class Bucket:
    """A token bucket: ``burst`` at once, then ``rate`` per second.

    Over any window of t seconds it allows at most ``burst + rate * t``.
    """

    __slots__ = ("at", "burst", "rate", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        # One float object for every bucket of a kind, and the tokens of a full bucket.
        self.burst = burst if type(burst) is float else float(burst)
        self.tokens = self.burst
        self.at = now

    def _refill(self, now: float) -> None:
        if now > self.at:
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
            self.at = now

    def allow(self, now: float) -> bool:
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def peek(self, now: float) -> bool:
        """Would one be allowed now (takes nothing)."""
        self._refill(now)
        return self.tokens >= 1.0


@dataclass(frozen=True, slots=True)
class Rates:
    msg_rate: float
    msg_burst: int
    request_rate: float
    request_burst: int
    user_msg_rate: float
    user_msg_burst: int
    profile_rate: float
    profile_burst: int
    login_rate: float = 50.0
    login_burst: int = 500

    @classmethod
    def of(cls, config: MsgServerConfig) -> Rates:
        return cls(
            config.msg_rate,
            config.msg_burst,
            config.request_rate,
            config.request_burst,
            config.user_msg_rate,
            config.user_msg_burst,
            config.profile_rate,
            config.profile_burst,
            config.login_rate_per_source,
            config.login_burst_per_source,
        )


# A bucket not made yet is a full one: made on its first use, so an idle connection holds
# only its request bucket (its login took a token) and its user no bucket at all.
@dataclass(slots=True)
class _ConnBuckets:
    requests: Bucket
    messages: Bucket | None = None
    user_id: int = 0


@dataclass(slots=True)
class _UserBuckets:
    messages: Bucket | None = None
    profile: Bucket | None = None
    connections: int = 0


K = TypeVar("K", bound=Hashable)


@dataclass
class RateLimits(Generic[K]):
    """The buckets of the live connections (keyed by ``K``) and of their users."""

    rates: Rates
    _conns: dict[K, _ConnBuckets] = field(default_factory=dict)
    _users: dict[int, _UserBuckets] = field(default_factory=dict)
    _sources: OrderedDict[str, Bucket] = field(default_factory=OrderedDict)  # login attempts, LRU
    # Each kind's burst as one float object, shared by its buckets.
    _bursts: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        r = self.rates
        self._bursts = (
            float(r.request_burst),
            float(r.msg_burst),
            float(r.user_msg_burst),
            float(r.profile_burst),
        )

    def _conn(self, key: K, now: float) -> _ConnBuckets:
        buckets = self._conns.get(key)
        if buckets is None:
            buckets = _ConnBuckets(Bucket(self.rates.request_rate, self._bursts[0], now))
            self._conns[key] = buckets
        return buckets

    def logged_in(self, key: K, user_id: int, now: float) -> None:
        """The connection is now this user's: its messages and profile changes count for the user too."""
        conn = self._conn(key, now)
        if conn.user_id == user_id:
            return
        if conn.user_id:
            self._release_user(conn.user_id)
        conn.user_id = user_id
        user = self._users.get(user_id)
        if user is None:
            user = self._users[user_id] = _UserBuckets()
        user.connections += 1

    def check(self, key: K, command: int, now: float, source: str = "") -> str | None:
        """Take what ``command`` costs; None if allowed, else the kind of limit it is over.

        A refused frame takes nothing from the other buckets (a request
        refused by its user's limit still used its connection's request token).
        """
        if command in NEVER_LIMITED:
            return None
        conn = self._conn(key, now)
        if not conn.requests.allow(now):
            return "requests"
        if command == Cmd.LOGIN_REQ and not self._source(source, now).allow(now):
            return "logins"
        user = self._users.get(conn.user_id) if conn.user_id else None
        if command in MESSAGES:
            r = self.rates
            messages = conn.messages
            if messages is None:
                messages = conn.messages = Bucket(r.msg_rate, self._bursts[1], now)
            if not messages.peek(now):
                return "messages"
            if user is not None:
                if user.messages is None:
                    user.messages = Bucket(r.user_msg_rate, self._bursts[2], now)
                if not user.messages.allow(now):
                    return "user_messages"
            messages.allow(now)
        elif command in PROFILE_CHANGES and user is not None:
            if user.profile is None:
                user.profile = Bucket(self.rates.profile_rate, self._bursts[3], now)
            if not user.profile.allow(now):
                return "profile"
        return None

    def _source(self, source: str, now: float) -> Bucket:
        bucket = self._sources.pop(source, None)
        if bucket is None:
            bucket = Bucket(self.rates.login_rate, self.rates.login_burst, now)
        self._sources[source] = bucket  # the most recent last
        if len(self._sources) > MAX_SOURCES:
            self._sources.popitem(last=False)
        return bucket

    def gone(self, key: K) -> None:
        conn = self._conns.pop(key, None)
        if conn is not None and conn.user_id:
            self._release_user(conn.user_id)

    def _release_user(self, user_id: int) -> None:
        user = self._users.get(user_id)
        if user is None:
            return
        user.connections -= 1
        if user.connections <= 0:
            del self._users[user_id]

    def sizes(self) -> tuple[int, int]:
        """(connections, users) with buckets: bounded by the live ones."""
        return len(self._conns), len(self._users)

    def wait(self, kind: str) -> float:
        """Seconds for the bucket of ``kind`` to get one token back."""
        r = self.rates
        rates = {
            "requests": r.request_rate,
            "messages": r.msg_rate,
            "user_messages": r.user_msg_rate,
            "profile": r.profile_rate,
            "logins": r.login_rate,
        }
        return 1.0 / rates[kind]


class Limiter:
    """The gateway's rate limits: a :class:`RateLimits` plus the counting, logging and refusal."""

    def __init__(self, config: MsgServerConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits: RateLimits[int] = RateLimits(Rates.of(config))
        self.clock = clock
        self._logs: dict[int, Throttle] = {}  # per connection with a refusal, dropped with it
        self._held: set[int] = set()  # connections whose dispatch is paused by a refusal
        self.max_pending = config.max_pending_requests

    def allow(self, conn: ClientConnection, frame: Frame) -> bool:
        """True to dispatch ``frame``; False if refused (counted, logged, answered here)."""
        kind = self.limits.check(conn.conn_id, frame.command_id, self.clock(), conn.source)
        if kind is None:
            return True
        RATE_LIMITED.labels(kind).inc()
        throttle = self._logs.get(conn.conn_id)
        if throttle is None:
            throttle = self._logs[conn.conn_id] = Throttle(LOG_INTERVAL, self.clock)
        if throttle.ready():  # the client's doing: INFO, as for any bad input (handlers/base.py)
            conn.log.info("0x%04x refused: over the %s rate limit%s", frame.command_id, kind, throttle.more())
        if kind == "logins":
            # Answered (and closed) only after HOLD: the address's connections before login are
            # capped (admission.py), so a guesser reconnecting for every try gets at most that
            # many tries a second instead of as many as it can open and close.
            conn.pause_dispatch()
            asyncio.get_running_loop().call_later(HOLD, self._answer_later, conn, frame)
            return False
        self._answer(conn, frame)
        self._hold(conn, kind)
        return False

    def _answer_later(self, conn: ClientConnection, frame: Frame) -> None:
        if not conn.closing:
            self._answer(conn, frame)

    def _hold(self, conn: ClientConnection, kind: str) -> None:
        if conn.closing:
            return
        conn.pause_dispatch()  # again, if the in-flight limit's end resumed it meanwhile
        if conn.conn_id in self._held:
            return
        self._held.add(conn.conn_id)
        delay = min(HOLD, self.limits.wait(kind))
        asyncio.get_running_loop().call_later(delay, self._release, conn)

    def _release(self, conn: ClientConnection) -> None:
        if conn.conn_id not in self._held:
            return  # gone meanwhile
        self._held.discard(conn.conn_id)
        # Not if the in-flight limit holds it too (its next request done resumes it), nor when
        # shutting down.
        if not (conn.closing or conn.draining) and conn.pending <= self.max_pending // 2:
            conn.resume_dispatch()

    def holds(self, conn: ClientConnection) -> bool:
        """Whether a refusal paused ``conn``'s dispatch (the in-flight limit must not resume it)."""
        return conn.conn_id in self._held

    def _answer(self, conn: ClientConnection, frame: Frame) -> None:
        from msg_server import handlers
        from msg_server.handlers.base import client_error

        entry = handlers.CLIENT_COMMANDS.get(frame.command_id)
        if entry is None or not entry.reply_command or frame.command_id in MESSAGES:
            return  # a notice, a message (never acked when refused), a command it would not serve
        job = entry.parse(frame.body)  # a bad body closes the connection, as it would unlimited
        reply = job.refused(conn, client_error(Overloaded("over a rate limit; slow down")))
        if reply is not None:
            conn.send(job.reply_command, reply, frame.seq_num)
        if conn.close_after_reply:  # a refused login: TeamTalk's clients expect the close
            conn.close()

    def logged_in(self, conn: ClientConnection) -> None:
        self.limits.logged_in(conn.conn_id, conn.user_id, self.clock())

    def gone(self, conn: ClientConnection) -> None:
        self.limits.gone(conn.conn_id)
        self._logs.pop(conn.conn_id, None)
        self._held.discard(conn.conn_id)
