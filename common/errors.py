"""The one error taxonomy of the cluster.

Storage, services, handlers and admin methods raise these; nothing else
builds a wire error code. Each boundary maps them in exactly one function:

* internal link reply: :func:`error_code` (and back: :func:`from_code`),
* admin HTTP status: ``login_server.admin.api.http_status``,
* client reply: ``msg_server.handlers.base.client_error``.

Anything that is not an :class:`ImError` reaching a boundary is a bug: it is
the only thing logged with a traceback, and the peer sees :class:`Bug`.
"""

from __future__ import annotations

from common.pb import internal_pb2


class ImError(Exception):
    """Base of every error a peer may be told about; ``code`` is its wire code."""

    code: int = internal_pb2.ERR_INTERNAL
    #: False for errors that are the caller's fault: they are logged without a
    #: traceback (and at most at INFO), never as a server failure.
    server_fault: bool = True

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message or type(self).__doc__ or type(self).__name__


class InvalidArgument(ImError):
    """The request is malformed or a value is out of range (too long, 0, not UTF-8...)."""

    code = internal_pb2.ERR_BAD_REQUEST
    server_fault = False


class NotFound(ImError):
    """The user, group, department or message named does not exist."""

    code = internal_pb2.ERR_NOT_FOUND
    server_fault = False


class Conflict(ImError):
    """The change clashes with the current state (name taken, department not empty...)."""

    code = internal_pb2.ERR_CONFLICT
    server_fault = False


class Forbidden(ImError):
    """The caller may not do that (not a member, wrong role...)."""

    code = internal_pb2.ERR_FORBIDDEN
    server_fault = False


class Unavailable(ImError):
    """A dependency (database, a peer server, a link) cannot be reached now; retry later."""

    code = internal_pb2.ERR_UNAVAILABLE


class Overloaded(ImError):
    """A bounded queue or limit is full; retry later."""

    code = internal_pb2.ERR_OVERLOADED


class Bug(ImError):
    """An unexpected failure inside the server: logged with its traceback where it happened."""

    code = internal_pb2.ERR_INTERNAL


_BY_CODE: dict[int, type[ImError]] = {
    cls.code: cls for cls in (InvalidArgument, NotFound, Conflict, Forbidden, Unavailable, Overloaded, Bug)
}


def error_code(exc: BaseException) -> int:
    """The internal wire code of any exception (a non-ImError is a bug)."""
    return exc.code if isinstance(exc, ImError) else internal_pb2.ERR_INTERNAL


def from_code(code: int, message: str) -> ImError:
    """The exception a LinkError stands for, raised again on the calling side."""
    return _BY_CODE.get(code, Bug)(message)


def describe(exc: BaseException) -> str:
    """A one-line text for a peer: an ImError's message, never a bug's internals."""
    if isinstance(exc, ImError):
        return exc.message[:500]
    return "internal error"
