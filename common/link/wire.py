"""Sans-IO framing of the internal links.

An internal frame is a client frame (``common.codec``'s 16-byte header) whose
``flag`` says what it is and whose body starts with an 8-byte request id::

    header       flag 0 one-way, 1 request, 2 reply; seq_num and reserved 0
    u64 id       0 for a one-way frame; a request's id, echoed by its reply
    ...          the protobuf message

Request ids count up from 1 on each connection and are never reused, so a
reply that arrives after its request timed out can be recognised as late
(its id is below the next one to be issued) instead of answering a newer
request, as a reused 16-bit seq_num would. The decoder checks every header
field as soon as the header is in, before a body is buffered; any input
either parses or raises :class:`~common.codec.ProtocolError`. It decodes
the bytes itself (one copy of a body, no intermediate frame object): every
message between the servers goes through it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from common.codec import HEADER, HEADER_SIZE, PROTOCOL_VERSION, ProtocolError

REQUEST_ID = struct.Struct(">Q")
LINK_HEADER_SIZE = HEADER_SIZE + REQUEST_ID.size
#: The client header and the request id, packed at once.
_LINK_HEADER = struct.Struct(HEADER.format + "Q")
INTERNAL_MAX_FRAME = 32 << 20


class Kind(IntEnum):
    ONEWAY = 0
    REQUEST = 1
    REPLY = 2


@dataclass(slots=True)  # not frozen: a frozen dataclass costs ~10x as much to make, per frame
class LinkFrame:
    kind: Kind
    command_id: int
    request_id: int
    body: bytes


def encode(kind: Kind, command_id: int, request_id: int, body: bytes) -> bytes:
    header = _LINK_HEADER.pack(
        LINK_HEADER_SIZE + len(body), PROTOCOL_VERSION, kind, command_id >> 8, command_id, 0, 0, request_id
    )
    return header + body


_KINDS = (Kind.ONEWAY, Kind.REQUEST, Kind.REPLY)


class LinkDecoder:
    """Bytes in, :class:`LinkFrame` out; the header is checked before any body is buffered."""

    __slots__ = ("_buffer", "max_frame_size")

    def __init__(self, max_frame_size: int = INTERNAL_MAX_FRAME) -> None:
        if max_frame_size < HEADER_SIZE:
            raise ValueError(f"max_frame_size must be at least {HEADER_SIZE}")
        self.max_frame_size = max_frame_size
        self._buffer = bytearray()

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def next_frame(self) -> LinkFrame | None:
        buffer = self._buffer
        if len(buffer) < HEADER_SIZE:
            return None
        length, version, flag, service_id, command_id, seq_num, reserved = HEADER.unpack_from(buffer)
        if length < HEADER_SIZE:
            raise ProtocolError(f"frame length {length} is shorter than the header")
        if length > self.max_frame_size:
            raise ProtocolError(f"frame length {length} exceeds the limit of {self.max_frame_size}")
        if version != PROTOCOL_VERSION:
            raise ProtocolError(f"frame version {version}, expected {PROTOCOL_VERSION}")
        if flag > Kind.REPLY:
            raise ProtocolError(f"unknown frame kind {flag}")
        if service_id != command_id >> 8:
            raise ProtocolError(f"service id {service_id} does not match command 0x{command_id:04x}")
        if seq_num or reserved:
            raise ProtocolError("seq_num and reserved must be 0 on an internal link")
        if length < LINK_HEADER_SIZE:
            raise ProtocolError("internal frame too short for its request id")
        if len(buffer) < length:
            return None
        (request_id,) = REQUEST_ID.unpack_from(buffer, HEADER_SIZE)
        kind = _KINDS[flag]
        if (kind is Kind.ONEWAY) != (request_id == 0):
            raise ProtocolError(f"{kind.name.lower()} frame with request id {request_id}")
        body = bytes(buffer[LINK_HEADER_SIZE:length])
        del buffer[:length]
        return LinkFrame(kind, command_id, request_id, body)
