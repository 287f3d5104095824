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
        self.buffer_size = 0  # what get_write_buffer_size reports: a stuck peer
        self.reading = True
        self.closed = False
        self.aborted = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peer if name == "peername" else default

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed, "write after close"
        self.written += data

    def get_write_buffer_size(self) -> int:
        return self.buffer_size

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

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
