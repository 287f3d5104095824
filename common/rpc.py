"""Typed commands of the internal links: what may be asked, and what answers.

An :class:`Rpc` names a request command, its message type, and the one reply
command (and type) that may answer it; a :class:`OneWay` is a frame nobody
answers. A server's :class:`Commands` table maps each command a kind of peer
may send to a typed handler, so mypy checks that a handler takes the request
type and returns the reply type, and the link layer (``common.link``)
checks at run time that a reply has the declared command. Anything not in
the table is refused.

The catalog of the cluster's RPCs is in :mod:`common.commands`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from google.protobuf.message import Message

if TYPE_CHECKING:
    from common.link import Link

ReqT = TypeVar("ReqT", bound=Message)
ResT = TypeVar("ResT", bound=Message)
MsgT = TypeVar("MsgT", bound=Message)


@dataclass(frozen=True, slots=True)
class Rpc(Generic[ReqT, ResT]):
    """A request and the only reply it may get (or a LinkError)."""

    command: int
    request: type[ReqT]
    reply_command: int
    reply: type[ResT]


@dataclass(frozen=True, slots=True)
class OneWay(Generic[MsgT]):
    """A frame that gets no reply."""

    command: int
    message: type[MsgT]


RpcHandler = Callable[["Link", ReqT], Awaitable[ResT]]
OneWayHandler = Callable[["Link", MsgT], None]


@dataclass(frozen=True, slots=True)
class Route:
    """One entry of a command table; ``reply`` is None for a one-way command."""

    command: int
    request: type[Message]
    reply_command: int
    reply: type[Message] | None
    handler: Callable[[Link, Any], Any]

    @property
    def is_rpc(self) -> bool:
        return self.reply is not None


class Commands:
    """The commands one kind of peer may send on a link, each with its handler."""

    def __init__(self) -> None:
        self._routes: dict[int, Route] = {}

    def rpc(self, rpc: Rpc[ReqT, ResT], handler: RpcHandler[ReqT, ResT]) -> Commands:
        self._add(Route(rpc.command, rpc.request, rpc.reply_command, rpc.reply, handler))
        return self

    def oneway(self, oneway: OneWay[MsgT], handler: OneWayHandler[MsgT]) -> Commands:
        self._add(Route(oneway.command, oneway.message, 0, None, handler))
        return self

    def include(self, other: Commands) -> Commands:
        """Add every entry of ``other`` (each command still at most once)."""
        for route in other:
            self._add(route)
        return self

    def only(self, keep: Callable[[int], bool]) -> Commands:
        """A copy with the entries whose command ``keep`` accepts."""
        kept = Commands()
        for route in self:
            if keep(route.command):
                kept._add(route)
        return kept

    def _add(self, route: Route) -> None:
        if route.command in self._routes:
            raise ValueError(f"command 0x{route.command:04x} registered twice")
        self._routes[route.command] = route

    def get(self, command: int) -> Route | None:
        return self._routes.get(command)

    def __iter__(self) -> Iterator[Route]:
        return iter(self._routes.values())

    def __len__(self) -> int:
        return len(self._routes)

    def __contains__(self, command: object) -> bool:
        return command in self._routes
