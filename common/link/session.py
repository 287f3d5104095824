"""The sans-IO state machine of one internal link.

A :class:`LinkSession` never touches a socket or a clock: bytes go in with
:meth:`~LinkSession.receive_data` (which returns the events they caused),
bytes to write come out of :meth:`~LinkSession.data_to_send`, and time is
passed in as ``now``; :meth:`~LinkSession.get_timer` says when
:meth:`~LinkSession.handle_timer` is next due (aioquic's shape). The asyncio
adapter in :mod:`common.link.protocol` only pumps.

Its life::

    HANDSHAKE --(proofs checked both ways)--> OPEN --(error, silence, close)--> CLOSED

* Handshake: the accepting side sends LinkChallenge; the connecting side
  answers LinkHello with its proof; the accepting side checks it and reports
  :class:`PeerAuthenticated`, then its owner calls :meth:`accept` (LinkWelcome
  with the server's proof) or :meth:`refuse`. The connecting side checks the
  server's proof before it reports :class:`Opened`. Nothing else may be sent
  or received before that; a failure is reported as :class:`Closed` with an
  ``auth_failure`` reason, and the peer is told nothing.
* Requests carry ids that are never reused; each has a deadline. A reply to
  an id that is no longer pending is late: dropped and counted, never
  delivered anywhere else.
* Heartbeats: each side sends one whenever it has sent nothing for
  ``heartbeat_interval``; a peer silent for ``heartbeat_interval *
  heartbeat_misses`` is declared dead.
"""

from __future__ import annotations

import heapq
import itertools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from common.codec import ProtocolError
from common.commands import Cmd
from common.errors import Overloaded, Unavailable
from common.link.handshake import (
    CLIENT_LABEL,
    LINK_VERSION,
    NONCE_SIZE,
    SERVER_LABEL,
    Identity,
    matching_secret,
    prove,
    role_name,
    transcript,
    valid_node_id,
)
from common.link.wire import INTERNAL_MAX_FRAME, Kind, LinkDecoder, LinkFrame, encode
from common.pb import internal_pb2

M = TypeVar("M", bound=Message)


class Side(Enum):
    CLIENT = "client"  # connected out
    SERVER = "server"  # accepted


class State(Enum):
    HANDSHAKE = "handshake"
    OPEN = "open"
    CLOSED = "closed"


# -- events ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeerAuthenticated:
    """(Accepting side) the peer proved the secret; call accept() or refuse()."""

    peer: Identity


@dataclass(frozen=True, slots=True)
class Opened:
    """The handshake is complete: commands may flow."""

    peer: Identity


@dataclass(slots=True)  # per frame: not frozen, ~10x cheaper to make
class RequestReceived:
    request_id: int
    command_id: int
    body: bytes


@dataclass(slots=True)  # per frame: not frozen, ~10x cheaper to make
class OneWayReceived:
    command_id: int
    body: bytes


@dataclass(slots=True)  # per frame: not frozen, ~10x cheaper to make
class ReplyReceived:
    """The reply (or a LinkError, command LINK_ERROR) to one of our requests."""

    request_id: int
    command_id: int
    body: bytes


@dataclass(slots=True)  # per frame: not frozen, ~10x cheaper to make
class RequestTimedOut:
    request_id: int


@dataclass(slots=True)  # per frame: not frozen, ~10x cheaper to make
class LateReply:
    """A reply to a request that had timed out already: dropped."""

    request_id: int
    command_id: int


@dataclass(frozen=True, slots=True)
class Closed:
    """The link is over; close the connection. ``auth_failure`` names a failed handshake."""

    reason: str
    auth_failure: str = ""
    error: internal_pb2.LinkError | None = None  # what the peer told us before closing


Event = (
    PeerAuthenticated
    | Opened
    | RequestReceived
    | OneWayReceived
    | ReplyReceived
    | RequestTimedOut
    | LateReply
    | Closed
)


@dataclass(frozen=True, slots=True)
class Timing:
    heartbeat_interval: float = 1.0
    heartbeat_misses: int = 3
    handshake_timeout: float = 3.0

    @property
    def dead_after(self) -> float:
        return self.heartbeat_interval * self.heartbeat_misses


class LinkSession:
    def __init__(
        self,
        side: Side,
        me: Identity,
        secrets: Sequence[bytes],
        now: float,
        *,
        timing: Timing = Timing(),
        expect_role: int | None = None,
        max_in_flight: int = 16384,
        max_frame_size: int = INTERNAL_MAX_FRAME,
        nonce: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.side = side
        self.me = me
        # No secret configured (loopback development only) is the empty key:
        # the handshake runs the same, it just proves nothing.
        self._secrets = tuple(secrets) or (b"",)
        self._secret = self._secrets[0]
        self.timing = timing
        self.expect_role = expect_role
        self.max_in_flight = max_in_flight
        self.state = State.HANDSHAKE
        self.peer: Identity | None = None
        self._decoder = LinkDecoder(max_frame_size)
        self._out: list[bytes] = []
        self._nonce = nonce(NONCE_SIZE)
        self._peer_nonce = b""
        self._ids = itertools.count(1)
        self._next_id = 1
        self._pending: dict[int, float] = {}  # request id -> deadline
        self._deadlines: list[tuple[float, int]] = []  # heap; entries of answered requests linger
        self._handshake_deadline = now + timing.handshake_timeout
        self._last_received = now
        self._last_sent = now
        self.late_replies = 0
        if side is Side.SERVER:
            self._emit_frame(
                Kind.ONEWAY,
                Cmd.LINK_CHALLENGE,
                0,
                internal_pb2.LinkChallenge(
                    version=LINK_VERSION, role=_role(me.role), node_id=me.node_id, nonce=self._nonce
                ),
                now,
            )

    # -- queries ----------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self.state is State.OPEN

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def data_to_send(self) -> bytes:
        out = self._out
        if not out:
            return b""
        data = out[0] if len(out) == 1 else b"".join(out)  # most writes are one frame: no copy
        out.clear()
        return data

    def get_timer(self) -> float | None:
        """When handle_timer must next run (None once closed)."""
        if self.state is State.CLOSED:
            return None
        if self.state is State.HANDSHAKE:
            return self._handshake_deadline
        timer = min(
            self._last_sent + self.timing.heartbeat_interval,
            self._last_received + self.timing.dead_after,
        )
        self._drop_answered_deadlines()
        if self._deadlines:
            timer = min(timer, self._deadlines[0][0])
        return timer

    # -- input --------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> list[Event]:
        if self.state is State.CLOSED:
            return []
        self._last_received = now
        self._decoder.feed(data)
        events: list[Event] = []
        while self.state is not State.CLOSED:
            try:
                frame = self._decoder.next_frame()
            except ProtocolError as exc:
                events.append(self._close(f"protocol error: {exc}", self._auth_label("bad_frame")))
                break
            if frame is None:
                break
            if self.state is State.OPEN:
                self._open_frame(frame, events)
            else:
                self._handshake_frame(frame, now, events)
        return events

    def handle_timer(self, now: float) -> list[Event]:
        events: list[Event] = []
        if self.state is State.HANDSHAKE:
            if now >= self._handshake_deadline:
                events.append(self._close("handshake timed out", "handshake_timeout"))
            return events
        if self.state is State.CLOSED:
            return events
        if now - self._last_received >= self.timing.dead_after:
            events.append(self._close(f"peer silent for {now - self._last_received:.1f}s"))
            return events
        while self._deadlines and self._deadlines[0][0] <= now:
            _, request_id = heapq.heappop(self._deadlines)
            if self._pending.pop(request_id, None) is not None:
                events.append(RequestTimedOut(request_id))
        if now - self._last_sent >= self.timing.heartbeat_interval:
            self._out.append(encode(Kind.ONEWAY, Cmd.HEARTBEAT, 0, b""))
            self._last_sent = now
        return events

    # -- output ---------------------------------------------------------------------

    def send_request(self, command_id: int, body: bytes, now: float, timeout: float) -> int:
        """Queue a request; its id. Raises Unavailable (not open) or Overloaded."""
        if self.state is not State.OPEN:
            raise Unavailable(f"link is {self.state.value}")
        if len(self._pending) >= self.max_in_flight:
            raise Overloaded(f"{self.max_in_flight} requests in flight on this link")
        request_id = next(self._ids)
        self._next_id = request_id + 1
        deadline = now + timeout
        self._pending[request_id] = deadline
        heapq.heappush(self._deadlines, (deadline, request_id))
        self._out.append(encode(Kind.REQUEST, command_id, request_id, body))
        self._last_sent = now
        return request_id

    def send_oneway(self, command_id: int, body: bytes, now: float) -> bool:
        if self.state is not State.OPEN:
            return False
        self._out.append(encode(Kind.ONEWAY, command_id, 0, body))
        self._last_sent = now
        return True

    def send_reply(self, request_id: int, command_id: int, body: bytes, now: float) -> bool:
        if self.state is not State.OPEN:
            return False
        self._out.append(encode(Kind.REPLY, command_id, request_id, body))
        self._last_sent = now
        return True

    def send_error(self, request_id: int, code: int, message: str, now: float) -> bool:
        error = internal_pb2.LinkError(code=code, message=message)
        return self.send_reply(request_id, Cmd.LINK_ERROR, error.SerializeToString(), now)

    def cancel(self, request_id: int) -> None:
        """Forget a request whose caller gave up; its reply, if any, counts as late."""
        self._pending.pop(request_id, None)

    def accept(self, now: float) -> list[Event]:
        """(Accepting side) let the authenticated peer in."""
        if self.side is not Side.SERVER or self.peer is None or self.state is not State.HANDSHAKE:
            raise RuntimeError("accept() only after PeerAuthenticated")
        server_proof = prove(
            self._secret, transcript(SERVER_LABEL, self._nonce, self._peer_nonce, self.me, self.peer)
        )
        self._emit_frame(Kind.ONEWAY, Cmd.LINK_WELCOME, 0, internal_pb2.LinkWelcome(proof=server_proof), now)
        self.state = State.OPEN
        return [Opened(self.peer)]

    def refuse(self, code: int, message: str) -> Closed:
        """(Accepting side) turn away an authenticated peer, telling it why."""
        error = internal_pb2.LinkError(code=code, message=message)
        self._out.append(encode(Kind.ONEWAY, Cmd.LINK_ERROR, 0, error.SerializeToString()))
        return self._close(f"refused: {message}", "refused")

    def close(self, reason: str) -> Closed:
        return self._close(reason)

    # -- internals ------------------------------------------------------------------

    def _emit_frame(self, kind: Kind, command_id: int, request_id: int, message: Message, now: float) -> None:
        self._out.append(encode(kind, command_id, request_id, message.SerializeToString()))
        self._last_sent = now

    def _close(
        self, reason: str, auth_failure: str = "", error: internal_pb2.LinkError | None = None
    ) -> Closed:
        self.state = State.CLOSED
        self._pending.clear()
        self._deadlines.clear()
        return Closed(reason, auth_failure, error)

    def _auth_label(self, label: str) -> str:
        return label if self.state is State.HANDSHAKE else ""

    def _drop_answered_deadlines(self) -> None:
        deadlines = self._deadlines
        while deadlines and deadlines[0][1] not in self._pending:
            heapq.heappop(deadlines)

    def _open_frame(self, frame: LinkFrame, events: list[Event]) -> None:
        command = frame.command_id
        if frame.kind is Kind.REPLY:
            if self._pending.pop(frame.request_id, None) is not None:
                events.append(ReplyReceived(frame.request_id, command, frame.body))
            elif frame.request_id < self._next_id:
                self.late_replies += 1
                events.append(LateReply(frame.request_id, command))
            else:
                events.append(self._close(f"reply to request {frame.request_id}, which was never sent"))
        elif frame.kind is Kind.REQUEST:
            events.append(RequestReceived(frame.request_id, command, frame.body))
        elif command == Cmd.HEARTBEAT:
            pass  # its arrival was the point
        elif command == Cmd.LINK_ERROR:
            events.append(self._close("peer closed the link with an error", error=_parse_error(frame.body)))
        elif command in _HANDSHAKE_COMMANDS:
            events.append(self._close(f"handshake frame 0x{command:04x} on an open link"))
        else:
            events.append(OneWayReceived(command, frame.body))

    def _handshake_frame(self, frame: LinkFrame, now: float, events: list[Event]) -> None:
        if self.side is Side.SERVER:
            self._server_handshake(frame, events)
        else:
            self._client_handshake(frame, now, events)

    def _server_handshake(self, frame: LinkFrame, events: list[Event]) -> None:
        if self.peer is not None:
            # Authenticated, waiting for our owner to accept: the peer must wait too.
            events.append(self._close("frame before the handshake finished", "unexpected_frame"))
            return
        if frame.kind is not Kind.ONEWAY or frame.command_id != Cmd.LINK_HELLO:
            events.append(self._close(f"first frame 0x{frame.command_id:04x} is not LinkHello", "no_hello"))
            return
        hello = _parse(internal_pb2.LinkHello, frame.body)
        if hello is None or len(hello.nonce) != NONCE_SIZE or not valid_node_id(hello.node_id):
            events.append(self._close("malformed LinkHello", "bad_hello"))
            return
        peer = Identity(hello.role, hello.node_id)
        message = transcript(CLIENT_LABEL, self._nonce, hello.nonce, self.me, peer)
        secret = matching_secret(self._secrets, message, hello.proof)
        if secret is None:
            events.append(self._close(f"{hello.node_id!r} did not prove the cluster secret", "bad_proof"))
            return
        self._secret = secret  # answer with the secret the peer used (a rotation may be under way)
        self._peer_nonce = hello.nonce
        self.peer = peer
        events.append(PeerAuthenticated(peer))

    def _client_handshake(self, frame: LinkFrame, now: float, events: list[Event]) -> None:
        command = frame.command_id
        if self._peer_nonce == b"":
            if frame.kind is not Kind.ONEWAY or command != Cmd.LINK_CHALLENGE:
                events.append(
                    self._close(f"first frame 0x{command:04x} is not LinkChallenge", "no_challenge")
                )
                return
            challenge = _parse(internal_pb2.LinkChallenge, frame.body)
            if (
                challenge is None
                or len(challenge.nonce) != NONCE_SIZE
                or not valid_node_id(challenge.node_id)
            ):
                events.append(self._close("malformed LinkChallenge", "bad_challenge"))
                return
            if challenge.version != LINK_VERSION:
                events.append(
                    self._close(
                        f"peer speaks link version {challenge.version}, not {LINK_VERSION}", "version"
                    )
                )
                return
            if self.expect_role is not None and challenge.role != self.expect_role:
                events.append(
                    self._close(
                        f"peer is {role_name(challenge.role)}, not {role_name(self.expect_role)}",
                        "wrong_role",
                    )
                )
                return
            self.peer = Identity(challenge.role, challenge.node_id)
            self._peer_nonce = challenge.nonce
            proof = prove(
                self._secret, transcript(CLIENT_LABEL, challenge.nonce, self._nonce, self.peer, self.me)
            )
            hello = internal_pb2.LinkHello(
                role=_role(self.me.role), node_id=self.me.node_id, nonce=self._nonce, proof=proof
            )
            self._emit_frame(Kind.ONEWAY, Cmd.LINK_HELLO, 0, hello, now)
            return
        assert self.peer is not None
        if frame.kind is Kind.ONEWAY and command == Cmd.LINK_ERROR:
            error = _parse_error(frame.body)
            text = error.message if error is not None else "?"
            events.append(self._close(f"refused by the peer: {text}", "refused", error))
            return
        if frame.kind is not Kind.ONEWAY or command != Cmd.LINK_WELCOME:
            events.append(self._close(f"frame 0x{command:04x} before LinkWelcome", "unexpected_frame"))
            return
        welcome = _parse(internal_pb2.LinkWelcome, frame.body)
        expected = transcript(SERVER_LABEL, self._peer_nonce, self._nonce, self.peer, self.me)
        if welcome is None or matching_secret((self._secret,), expected, welcome.proof) is None:
            events.append(self._close("peer did not prove the cluster secret", "bad_server_proof"))
            return
        self.state = State.OPEN
        events.append(Opened(self.peer))


_HANDSHAKE_COMMANDS = frozenset({Cmd.LINK_HELLO, Cmd.LINK_CHALLENGE, Cmd.LINK_WELCOME})


def _parse(cls: type[M], body: bytes) -> M | None:
    message = cls()
    try:
        message.ParseFromString(body)
    except (DecodeError, ValueError, RuntimeError):
        return None
    return message if message.IsInitialized() else None


def _parse_error(body: bytes) -> internal_pb2.LinkError | None:
    return _parse(internal_pb2.LinkError, body)


def _role(role: int) -> internal_pb2.LinkRole.ValueType:
    return internal_pb2.LinkRole.ValueType(role)
