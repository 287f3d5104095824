"""The frame codec on plain bytes: any input parses or raises ProtocolError."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.codec import HEADER_SIZE, Frame, FrameDecoder, ProtocolError, encode_frame
from common.commands import BadBody, Cmd, decode_body
from common.pb import base_pb2, message_pb2


def drain(decoder: FrameDecoder) -> list[Frame]:
    frames = []
    while (frame := decoder.next_frame()) is not None:
        frames.append(frame)
    return frames


def test_header_layout_is_big_endian_teamtalk() -> None:
    data = encode_frame(0x0301, b"abc", seq_num=0x1234)
    assert data == struct.pack(">IHHHHHH", 19, 1, 0, 0x03, 0x0301, 0x1234, 0) + b"abc"


def test_round_trip_and_seq_echo() -> None:
    decoder = FrameDecoder()
    decoder.feed(encode_frame(Cmd.HEARTBEAT, b"", 7) + encode_frame(Cmd.MSG_DATA, b"xyz", 8))
    frames = drain(decoder)
    assert [(f.command_id, f.seq_num, f.body, f.service_id) for f in frames] == [
        (0x0701, 7, b"", 0x07),
        (0x0301, 8, b"xyz", 0x03),
    ]
    assert decoder.buffered == 0


def test_oversized_length_is_refused_at_the_header() -> None:
    decoder = FrameDecoder(max_frame_size=1024)
    # Only the header has arrived; the refusal must not wait for the body.
    decoder.feed(struct.pack(">IHHHHHH", 1025, 1, 0, 3, 0x0301, 1, 0))
    with pytest.raises(ProtocolError, match="exceeds"):
        decoder.next_frame()


@pytest.mark.parametrize("length", [0, 1, 15])
def test_length_shorter_than_header_is_refused(length: int) -> None:
    decoder = FrameDecoder()
    decoder.feed(struct.pack(">IHHHHHH", length, 1, 0, 7, 0x0701, 0, 0))
    with pytest.raises(ProtocolError, match="shorter"):
        decoder.next_frame()


def test_frame_at_exactly_the_limit_is_accepted() -> None:
    decoder = FrameDecoder(max_frame_size=HEADER_SIZE + 10)
    decoder.feed(encode_frame(0x0301, b"x" * 10))
    assert drain(decoder)[0].body == b"x" * 10


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048), st.integers(min_value=16, max_value=4096))
def test_any_bytes_parse_or_raise_protocol_error(data: bytes, limit: int) -> None:
    decoder = FrameDecoder(max_frame_size=limit)
    decoder.feed(data)
    try:
        frames = drain(decoder)
    except ProtocolError:
        return
    consumed = sum(HEADER_SIZE + len(f.body) for f in frames)
    assert consumed + decoder.buffered == len(data)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.binary(max_size=300)), max_size=8)
)
def test_byte_by_byte_feeding_gives_the_same_frames(frames: list[tuple[int, int, bytes]]) -> None:
    stream = b"".join(encode_frame(cmd, body, seq) for cmd, seq, body in frames)
    whole = FrameDecoder()
    whole.feed(stream)
    expected = drain(whole)
    one_by_one = FrameDecoder()
    got: list[Frame] = []
    for i in range(len(stream)):
        one_by_one.feed(stream[i : i + 1])
        got.extend(drain(one_by_one))
    assert got == expected
    assert [(f.command_id, f.seq_num, f.body) for f in got] == frames


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512))
def test_byte_by_byte_garbage_parses_or_raises(data: bytes) -> None:
    decoder = FrameDecoder(max_frame_size=256)
    try:
        for i in range(len(data)):
            decoder.feed(data[i : i + 1])
            drain(decoder)
    except ProtocolError:
        pass


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([Cmd.MSG_DATA, Cmd.LOGIN_REQ, Cmd.MSG_LIST_REQ, Cmd.DB_SAVE_MSG_REQ]),
    st.binary(max_size=200),
)
def test_any_body_decodes_or_raises_bad_body(command: int, body: bytes) -> None:
    try:
        decode_body(command, body)
    except BadBody:
        pass


def test_missing_required_field_is_bad_body() -> None:
    partial = message_pb2.IMMsgDataAck(user_id=1, session_id=2, msg_id=3)  # no session_type
    with pytest.raises(BadBody, match="session_type"):
        decode_body(Cmd.MSG_DATA_ACK, partial.SerializePartialToString())


def test_unknown_command_is_bad_body() -> None:
    with pytest.raises(BadBody, match="unknown command"):
        decode_body(0x7777, b"")


def test_zero_valued_required_fields_are_on_the_wire() -> None:
    # proto2: TeamTalk clients reject a message lacking a required field,
    # even one whose value is zero.
    ack = message_pb2.IMMsgDataAck(
        user_id=0, session_id=0, msg_id=0, session_type=base_pb2.SESSION_TYPE_SINGLE
    )
    assert ack.SerializeToString() == bytes([0x08, 0, 0x10, 0, 0x18, 0, 0x20, 1])
