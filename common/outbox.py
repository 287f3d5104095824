"""Sans-IO: the bytes a connection has accepted for its peer and not yet handed
to the transport (see :mod:`common.connection`). No asyncio: tested on plain bytes."""

from __future__ import annotations

from collections import deque


class Outbox:
    """Bytes accepted for a peer and not yet handed to its transport, in order.

    Sans-IO: :meth:`put` appends, :meth:`take` hands out the next piece of at
    most ``limit`` bytes (a slice, not a copy). It counts the bytes of
    unsolicited frames and of replies apart, for the two different bounds.
    """

    __slots__ = ("_items", "queued", "replies", "unsolicited")

    def __init__(self) -> None:
        # (bytes, unsolicited); made on the first put: an idle connection holds no deque
        self._items: deque[tuple[memoryview, bool]] | None = None
        self.queued = 0
        self.unsolicited = 0
        self.replies = 0

    def __bool__(self) -> bool:
        return self.queued > 0

    def put(self, data: bytes, unsolicited: bool) -> None:
        if not data:
            return
        if self._items is None:
            self._items = deque()
        self._items.append((memoryview(data), unsolicited))
        self.queued += len(data)
        if unsolicited:
            self.unsolicited += len(data)
        else:
            self.replies += len(data)

    def take(self, limit: int) -> memoryview | None:
        if not self._items:
            return None
        data, unsolicited = self._items[0]
        if len(data) <= limit:
            self._items.popleft()
            piece = data
        else:
            piece = data[:limit]
            self._items[0] = (data[limit:], unsolicited)
        self.queued -= len(piece)
        if unsolicited:
            self.unsolicited -= len(piece)
        else:
            self.replies -= len(piece)
        return piece

    def clear(self) -> None:
        self._items = None
        self.queued = self.unsolicited = self.replies = 0
