"""Sans-IO codec for TeamTalk's 16-byte frame header.

A frame on the wire::

    u32 length      whole frame, header included
    u16 version     1
    u16 flag        0
    u16 service_id  high byte of command_id, by convention
    u16 command_id
    u16 seq_num     chosen by the requester, echoed in the reply
    u16 reserved    0
    ...             protobuf body, length - 16 bytes

The decoder never touches a socket: bytes go in with :meth:`FrameDecoder.feed`
and frames come out of :meth:`FrameDecoder.next_frame`. Any input either
parses or raises :class:`ProtocolError`, and the declared length is checked
as soon as the header is complete, so a peer cannot make us buffer a body we
would refuse anyway.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

HEADER = struct.Struct(">IHHHHHH")
HEADER_SIZE = HEADER.size
PROTOCOL_VERSION = 1
DEFAULT_MAX_FRAME = 64 * 1024
MAX_SEQ = 0xFFFF


class ProtocolError(Exception):
    """The peer sent bytes that are not a valid frame stream."""


@dataclass(slots=True)
class Frame:
    """One decoded frame (not frozen: a frozen dataclass costs ~2 us more per frame to build)."""

    command_id: int
    seq_num: int
    body: bytes
    service_id: int
    flag: int = 0
    version: int = PROTOCOL_VERSION
    reserved: int = 0


def encode_frame(command_id: int, body: bytes, seq_num: int = 0) -> bytes:
    """Serialise one frame; the service id is the command id's high byte."""
    return (
        HEADER.pack(HEADER_SIZE + len(body), PROTOCOL_VERSION, 0, command_id >> 8, command_id, seq_num, 0)
        + body
    )


class FrameDecoder:
    """Turns a byte stream into frames, refusing oversized ones at the header."""

    __slots__ = ("_buffer", "max_frame_size")

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME) -> None:
        if max_frame_size < HEADER_SIZE:
            raise ValueError(f"max_frame_size must be at least {HEADER_SIZE}")
        self.max_frame_size = max_frame_size
        # Made on a feed and dropped once every byte of it is returned as frames: an idle
        # connection between frames holds no buffer.
        self._buffer: bytearray | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a frame."""
        return 0 if self._buffer is None else len(self._buffer)

    def feed(self, data: bytes) -> None:
        if not data:
            return
        if self._buffer is None:
            self._buffer = bytearray(data)
        else:
            self._buffer += data

    def next_frame(self) -> Frame | None:
        """Return the next complete frame, or None until more bytes arrive."""
        buffer = self._buffer
        if buffer is None or len(buffer) < HEADER_SIZE:
            return None
        length, version, flag, service_id, command_id, seq_num, reserved = HEADER.unpack_from(buffer)
        if length < HEADER_SIZE:
            raise ProtocolError(f"frame length {length} is shorter than the header")
        if length > self.max_frame_size:
            raise ProtocolError(f"frame length {length} exceeds the limit of {self.max_frame_size}")
        if len(buffer) < length:
            return None
        body = bytes(buffer[HEADER_SIZE:length])
        if len(buffer) == length:
            self._buffer = None
        else:
            del buffer[:length]
        return Frame(command_id, seq_num, body, service_id, flag, version, reserved)
