"""An in-memory transport that records what a protocol object does."""

from __future__ import annotations

import asyncio
from typing import Any

from common.codec import Frame, FrameDecoder
from common.commands import decode_body


class MemoryTransport(asyncio.Transport):
    def __init__(self, protocol: asyncio.Protocol, peer: tuple[str, int] = ("127.0.0.1", 40000)) -> None:
        super().__init__()
        self.protocol = protocol
        self.peer = peer
        self.written = bytearray()
        self.buffer_size = 0  # what get_write_buffer_size reports: bytes the peer has not read
        # A peer that reads only when told (drain): writes stay in buffer_size and
        # pause/resume the protocol at the limits, as asyncio's transports do.
        self.stuck = False
        self.high = 64 * 1024
        self.low = 16 * 1024
        self.writing_paused = False
        self.writes: list[int] = []  # the size of each write
        self.reading = True
        self.closed = False
        self.aborted = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peer if name == "peername" else default

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed, "write after close"
        self.written += data
        self.writes.append(len(data))
        if self.stuck:
            self.buffer_size += len(data)
            if not self.writing_paused and self.buffer_size > self.high:
                self.writing_paused = True
                self.protocol.pause_writing()

    def drain(self, size: int) -> None:
        """The stuck peer reads ``size`` bytes."""
        self.buffer_size = max(0, self.buffer_size - size)
        if self.writing_paused and self.buffer_size <= self.low:
            self.writing_paused = False
            self.protocol.resume_writing()

    def get_write_buffer_size(self) -> int:
        return self.buffer_size

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is not None:
            self.high = high
            self.low = high // 4 if low is None else low

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self._finish()

    def abort(self) -> None:
        self.aborted = True
        self._finish()

    def _finish(self) -> None:
        if not self.closed:
            self.closed = True
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def frames(self) -> list[tuple[Frame, Any]]:
        """Everything written so far, decoded."""
        decoder = FrameDecoder(max_frame_size=1 << 24)
        decoder.feed(bytes(self.written))
        out = []
        while (frame := decoder.next_frame()) is not None:
            out.append((frame, decode_body(frame.command_id, frame.body)))
        return out
