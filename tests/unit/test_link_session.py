"""The sans-IO link session, two ends in memory on a fake clock."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.codec import ProtocolError
from common.commands import Cmd
from common.link.handshake import CLIENT_LABEL, Identity, prove, transcript
from common.link.session import (
    Closed,
    Event,
    LateReply,
    LinkSession,
    OneWayReceived,
    Opened,
    PeerAuthenticated,
    ReplyReceived,
    RequestReceived,
    RequestTimedOut,
    Side,
    Timing,
)
from common.link.settings import Backoff
from common.link.wire import Kind, LinkDecoder, encode
from common.pb import internal_pb2

GATEWAY = Identity(internal_pb2.ROLE_GATEWAY, "msg-1")
DB = Identity(internal_pb2.ROLE_DB_PROXY, "db-1")
SECRET = b"a-cluster-secret-of-some-length"
TIMING = Timing(heartbeat_interval=1.0, heartbeat_misses=3, handshake_timeout=3.0)


def counter_nonce() -> Callable[[int], bytes]:
    counter = itertools.count(1)
    return lambda n: next(counter).to_bytes(n, "big")


@dataclass
class Pair:
    """A client and a server session joined by an in-memory wire."""

    client: LinkSession
    server: LinkSession
    now: float = 0.0
    client_events: list[Event] = field(default_factory=list)
    server_events: list[Event] = field(default_factory=list)
    accept: bool = True

    def pump(self) -> None:
        """Move bytes both ways until neither end has anything to say."""
        for _ in range(20):
            to_server = self.client.data_to_send()
            to_client = self.server.data_to_send()
            if not to_server and not to_client:
                return
            if to_server:
                for event in self.server.receive_data(to_server, self.now):
                    self.server_events.append(event)
                    if isinstance(event, PeerAuthenticated):
                        if self.accept:
                            self.server_events += self.server.accept(self.now)
                        else:
                            self.server_events.append(self.server.refuse(internal_pb2.ERR_FORBIDDEN, "no"))
            if to_client:
                self.client_events += self.client.receive_data(to_client, self.now)
        raise AssertionError("the sessions never went quiet")

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.client_events += self.client.handle_timer(self.now)
        self.server_events += self.server.handle_timer(self.now)


def pair(
    client_secrets: tuple[bytes, ...] = (SECRET,),
    server_secrets: tuple[bytes, ...] = (SECRET,),
    *,
    expect_role: int | None = internal_pb2.ROLE_DB_PROXY,
    accept: bool = True,
) -> Pair:
    server = LinkSession(Side.SERVER, DB, server_secrets, 0.0, timing=TIMING, nonce=counter_nonce())
    client = LinkSession(
        Side.CLIENT,
        GATEWAY,
        client_secrets,
        0.0,
        timing=TIMING,
        expect_role=expect_role,
        nonce=counter_nonce(),
    )
    p = Pair(client, server, accept=accept)
    p.pump()
    return p


def closed(events: list[Event]) -> Closed:
    found = [e for e in events if isinstance(e, Closed)]
    assert found, events
    return found[0]


# -- handshake ----------------------------------------------------------------------


def test_handshake_opens_both_ends_with_each_others_identity() -> None:
    p = pair()
    assert p.client.is_open and p.server.is_open
    assert Opened(DB) in p.client_events
    assert PeerAuthenticated(GATEWAY) in p.server_events and Opened(GATEWAY) in p.server_events


@pytest.mark.parametrize(
    ("client_secrets", "server_secrets"),
    [((), (SECRET,)), ((b"another-secret-entirely-x",), (SECRET,)), ((SECRET,), ())],
    ids=["client-has-none", "wrong-secret", "server-has-none"],
)
def test_a_peer_without_the_secret_gets_nothing_and_is_closed(
    client_secrets: tuple[bytes, ...], server_secrets: tuple[bytes, ...]
) -> None:
    p = pair(client_secrets, server_secrets)
    assert not p.server.is_open and not p.client.is_open
    assert closed(p.server_events).auth_failure == "bad_proof"
    # Nothing but the challenge ever went to the client: no welcome, no error.
    assert not any(isinstance(e, Opened) for e in p.client_events)
    assert p.server.data_to_send() == b""


def test_a_replayed_hello_is_refused() -> None:
    # An eavesdropper records a real client's hello...
    p = pair()
    recorded_server = LinkSession(Side.SERVER, DB, (SECRET,), 0.0, timing=TIMING, nonce=counter_nonce())
    client = LinkSession(Side.CLIENT, GATEWAY, (SECRET,), 0.0, timing=TIMING, nonce=counter_nonce())
    client.receive_data(recorded_server.data_to_send(), 0.0)
    hello = client.data_to_send()
    assert p.server.is_open
    # ...and plays it to a server that challenged it with a fresh nonce.
    fresh = LinkSession(Side.SERVER, DB, (SECRET,), 0.0, timing=TIMING, nonce=lambda n: b"\x99" * n)
    fresh.data_to_send()
    events = fresh.receive_data(hello, 0.0)
    assert closed(events).auth_failure == "bad_proof"


def test_a_server_that_cannot_prove_the_secret_is_not_trusted() -> None:
    server_nonce = b"\x01" * 32
    client = LinkSession(Side.CLIENT, GATEWAY, (SECRET,), 0.0, timing=TIMING, nonce=counter_nonce())
    challenge = internal_pb2.LinkChallenge(
        version=1, role=internal_pb2.ROLE_DB_PROXY, node_id="db-1", nonce=server_nonce
    )
    client.receive_data(encode(Kind.ONEWAY, Cmd.LINK_CHALLENGE, 0, challenge.SerializeToString()), 0.0)
    client.data_to_send()
    welcome = internal_pb2.LinkWelcome(proof=b"\x00" * 32)
    events = client.receive_data(encode(Kind.ONEWAY, Cmd.LINK_WELCOME, 0, welcome.SerializeToString()), 0.0)
    assert closed(events).auth_failure == "bad_server_proof"
    assert not client.is_open


def test_the_client_checks_what_it_reached() -> None:
    p = pair(expect_role=internal_pb2.ROLE_ROUTE_SERVER)
    failure = closed(p.client_events)
    assert failure.auth_failure == "wrong_role"
    assert "db_proxy" in failure.reason and "route_server" in failure.reason


def test_a_refused_peer_is_told_why() -> None:
    p = pair(accept=False)
    failure = closed(p.client_events)
    assert failure.auth_failure == "refused"
    assert failure.error is not None and failure.error.code == internal_pb2.ERR_FORBIDDEN


@pytest.mark.parametrize(
    ("client_secrets", "server_secrets"),
    [
        ((b"new-secret-0123456789",), (b"old-secret-0123456789", b"new-secret-0123456789")),
        ((b"old-secret-0123456789",), (b"new-secret-0123456789", b"old-secret-0123456789")),
    ],
    ids=["client-rotated-first", "server-rotated-first"],
)
def test_a_rotation_in_progress_keeps_links_up(
    client_secrets: tuple[bytes, ...], server_secrets: tuple[bytes, ...]
) -> None:
    p = pair(client_secrets, server_secrets)
    assert p.client.is_open and p.server.is_open


def test_nothing_but_the_handshake_before_it_is_done() -> None:
    server = LinkSession(Side.SERVER, DB, (SECRET,), 0.0, timing=TIMING, nonce=counter_nonce())
    server.data_to_send()
    early = encode(Kind.REQUEST, Cmd.DB_LOGIN_REQ, 1, b"")
    assert closed(server.receive_data(early, 0.0)).auth_failure == "no_hello"


def test_a_proof_for_another_identity_does_not_pass() -> None:
    """A hello whose proof was made for another node id (a takeover attempt) fails."""
    server = LinkSession(Side.SERVER, DB, (SECRET,), 0.0, timing=TIMING, nonce=lambda n: b"\x05" * n)
    server.data_to_send()
    nonce = b"\x07" * 32
    proof = prove(SECRET, transcript(CLIENT_LABEL, b"\x05" * 32, nonce, DB, Identity(1, "msg-2")))
    hello = internal_pb2.LinkHello(role=internal_pb2.ROLE_GATEWAY, node_id="msg-1", nonce=nonce, proof=proof)
    events = server.receive_data(encode(Kind.ONEWAY, Cmd.LINK_HELLO, 0, hello.SerializeToString()), 0.0)
    assert closed(events).auth_failure == "bad_proof"


def test_a_silent_handshake_times_out() -> None:
    server = LinkSession(Side.SERVER, DB, (SECRET,), 0.0, timing=TIMING)
    assert server.get_timer() == 3.0
    assert server.handle_timer(2.9) == []
    assert closed(server.handle_timer(3.0)).auth_failure == "handshake_timeout"


# -- requests ---------------------------------------------------------------------------


def test_request_and_reply() -> None:
    p = pair()
    request_id = p.client.send_request(Cmd.DB_LOGIN_REQ, b"req", p.now, 5.0)
    p.pump()
    assert RequestReceived(request_id, Cmd.DB_LOGIN_REQ, b"req") in p.server_events
    p.server.send_reply(request_id, Cmd.DB_LOGIN_RES, b"res", p.now)
    p.pump()
    assert ReplyReceived(request_id, Cmd.DB_LOGIN_RES, b"res") in p.client_events
    assert p.client.in_flight == 0


def test_a_late_reply_is_dropped_not_given_to_a_newer_request() -> None:
    p = pair()
    old = p.client.send_request(Cmd.DB_SAVE_MSG_REQ, b"first", p.now, 1.0)
    p.pump()
    p.advance(1.0)
    assert RequestTimedOut(old) in p.client_events
    new = p.client.send_request(Cmd.DB_SAVE_MSG_REQ, b"second", p.now, 5.0)
    assert new != old
    p.pump()
    # The reply to the first request arrives only now.
    p.server.send_reply(old, Cmd.DB_SAVE_MSG_RES, b"msg_id=1", p.now)
    p.pump()
    assert LateReply(old, Cmd.DB_SAVE_MSG_RES) in p.client_events
    assert not any(isinstance(e, ReplyReceived) for e in p.client_events)
    assert p.client.late_replies == 1 and p.client.in_flight == 1
    p.server.send_reply(new, Cmd.DB_SAVE_MSG_RES, b"msg_id=2", p.now)
    p.pump()
    assert ReplyReceived(new, Cmd.DB_SAVE_MSG_RES, b"msg_id=2") in p.client_events


def test_request_ids_are_never_reused() -> None:
    p = pair()
    seen = set()
    for _ in range(70_000):  # more than a 16-bit seq_num could count
        request_id = p.client.send_request(Cmd.DB_LOGIN_REQ, b"", p.now, 1.0)
        assert request_id not in seen
        seen.add(request_id)
        p.client.cancel(request_id)
    p.client.data_to_send()


def test_a_reply_to_a_request_never_sent_closes_the_link() -> None:
    p = pair()
    p.server.send_reply(42, Cmd.DB_LOGIN_RES, b"", p.now)
    p.pump()
    assert "never sent" in closed(p.client_events).reason


def test_in_flight_requests_are_bounded() -> None:
    server = LinkSession(Side.SERVER, DB, (SECRET,), 0.0, timing=TIMING)
    client = LinkSession(Side.CLIENT, GATEWAY, (SECRET,), 0.0, timing=TIMING, max_in_flight=2)
    p = Pair(client, server)
    p.pump()
    client.send_request(Cmd.DB_LOGIN_REQ, b"", 0.0, 1.0)
    client.send_request(Cmd.DB_LOGIN_REQ, b"", 0.0, 1.0)
    from common.errors import Overloaded

    with pytest.raises(Overloaded):
        client.send_request(Cmd.DB_LOGIN_REQ, b"", 0.0, 1.0)


def test_one_way_frames_and_errors() -> None:
    p = pair()
    assert p.server.send_oneway(Cmd.ROUTE_DELIVER, b"push", p.now)
    request_id = p.client.send_request(Cmd.DB_LOGIN_REQ, b"", p.now, 5.0)
    p.pump()
    p.server.send_error(request_id, internal_pb2.ERR_NOT_FOUND, "no such user", p.now)
    p.pump()
    assert OneWayReceived(Cmd.ROUTE_DELIVER, b"push") in p.client_events
    error = next(e for e in p.client_events if isinstance(e, ReplyReceived))
    assert error.command_id == Cmd.LINK_ERROR
    assert internal_pb2.LinkError.FromString(error.body).code == internal_pb2.ERR_NOT_FOUND


# -- heartbeats -------------------------------------------------------------------------------


def test_idle_ends_heartbeat_and_stay_up() -> None:
    p = pair()
    for _ in range(10):
        p.advance(1.0)
        p.pump()
    assert p.client.is_open and p.server.is_open


def test_a_silent_peer_is_dead_within_interval_times_misses() -> None:
    p = pair()
    p.advance(1.0)
    p.client.data_to_send()  # the server's heartbeats never arrive (a frozen peer)
    p.advance(1.0)
    p.advance(0.9)
    assert p.client.is_open
    p.advance(0.1)
    assert "silent" in closed(p.client_events).reason
    assert not p.client.is_open


def test_timer_covers_heartbeat_and_request_deadlines() -> None:
    p = pair()
    assert p.client.get_timer() == pytest.approx(1.0)
    p.client.send_request(Cmd.DB_LOGIN_REQ, b"", p.now, 0.25)
    assert p.client.get_timer() == pytest.approx(0.25)


# -- backoff ------------------------------------------------------------------------------------


def test_backoff_grows_caps_and_resets_only_after_a_stable_link() -> None:
    backoff = Backoff(initial=0.1, cap=2.0, stable_after=10.0, rng=lambda: 1.0)
    delays = [backoff.failed() for _ in range(8)]
    assert delays[:5] == [0.1, 0.2, 0.4, 0.8, 1.6] and max(delays) == 2.0
    # A link that drops at once (a peer that accepts then closes) does not reset it.
    backoff.link_up(0.0)
    assert backoff.link_down(0.5) == 2.0
    backoff.link_up(100.0)
    assert backoff.link_down(111.0) == 0.1


def test_backoff_is_jittered() -> None:
    backoff = Backoff(initial=1.0, cap=1.0, rng=lambda: 0.0)
    assert backoff.failed() == 0.5


# -- fuzzing -------------------------------------------------------------------------------------


@given(st.binary(max_size=400))
@settings(max_examples=300, deadline=None)
def test_link_decoder_parses_or_raises_protocol_error(data: bytes) -> None:
    for chunks in ([data], [data[i : i + 1] for i in range(len(data))]):
        decoder = LinkDecoder(max_frame_size=1024)
        try:
            for chunk in chunks:
                decoder.feed(chunk)
                while decoder.next_frame() is not None:
                    pass
        except ProtocolError:
            pass


frames = st.builds(
    lambda kind, command, request_id, body: encode(kind, command, request_id, body),
    st.sampled_from(list(Kind)),
    st.sampled_from([int(c) for c in Cmd]),
    st.integers(0, 5),
    st.binary(max_size=64),
)


@given(st.lists(st.one_of(frames, st.binary(max_size=40)), max_size=8), st.booleans())
@settings(max_examples=300, deadline=None)
def test_hostile_bytes_never_break_a_session(chunks: list[bytes], open_first: bool) -> None:
    """Any bytes, before or after the handshake, give events or a Closed, never an exception."""
    p = pair()
    target = p.server if open_first else LinkSession(Side.SERVER, DB, (SECRET,), 0.0, timing=TIMING)
    for chunk in chunks:
        events = target.receive_data(chunk, 1.0)
        assert all(isinstance(e, Event.__args__) for e in events)
        target.data_to_send()
    target.handle_timer(10.0)
