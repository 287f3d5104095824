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
field; any input either parses or raises :class:`~common.codec.ProtocolError`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from common.codec import HEADER, HEADER_SIZE, PROTOCOL_VERSION, FrameDecoder, ProtocolError

REQUEST_ID = struct.Struct(">Q")
LINK_HEADER_SIZE = HEADER_SIZE + REQUEST_ID.size
INTERNAL_MAX_FRAME = 32 << 20


class Kind(IntEnum):
    ONEWAY = 0
    REQUEST = 1
    REPLY = 2


@dataclass(frozen=True, slots=True)
class LinkFrame:
    kind: Kind
    command_id: int
    request_id: int
    body: bytes


def encode(kind: Kind, command_id: int, request_id: int, body: bytes) -> bytes:
    return (
        HEADER.pack(LINK_HEADER_SIZE + len(body), PROTOCOL_VERSION, kind, command_id >> 8, command_id, 0, 0)
        + REQUEST_ID.pack(request_id)
        + body
    )


class LinkDecoder:
    """Bytes in, :class:`LinkFrame` out; the length is refused at the header."""

    __slots__ = ("_frames",)

    def __init__(self, max_frame_size: int = INTERNAL_MAX_FRAME) -> None:
        self._frames = FrameDecoder(max_frame_size)

    def feed(self, data: bytes) -> None:
        self._frames.feed(data)

    def next_frame(self) -> LinkFrame | None:
        frame = self._frames.next_frame()
        if frame is None:
            return None
        if frame.version != PROTOCOL_VERSION:
            raise ProtocolError(f"frame version {frame.version}, expected {PROTOCOL_VERSION}")
        if frame.flag not in (Kind.ONEWAY, Kind.REQUEST, Kind.REPLY):
            raise ProtocolError(f"unknown frame kind {frame.flag}")
        if frame.service_id != frame.command_id >> 8:
            raise ProtocolError(
                f"service id {frame.service_id} does not match command 0x{frame.command_id:04x}"
            )
        if frame.seq_num or frame.reserved:
            raise ProtocolError("seq_num and reserved must be 0 on an internal link")
        if len(frame.body) < REQUEST_ID.size:
            raise ProtocolError("internal frame too short for its request id")
        (request_id,) = REQUEST_ID.unpack_from(frame.body)
        kind = Kind(frame.flag)
        if (kind == Kind.ONEWAY) != (request_id == 0):
            raise ProtocolError(f"{kind.name.lower()} frame with request id {request_id}")
        return LinkFrame(kind, frame.command_id, request_id, frame.body[REQUEST_ID.size :])
