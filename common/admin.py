"""The server side of AdminCall: a table from method name to coroutine.

Each admin method takes the decoded JSON arguments and returns a JSON-able
dict; raising ServiceError picks the error code the caller sees.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from common.codec import Frame
from common.commands import Cmd
from common.link import LinkServerConnection, ServiceError
from common.pb import internal_pb2

AdminMethod = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def admin_handler(
    methods: Mapping[str, AdminMethod],
) -> Callable[
    [LinkServerConnection, Frame, internal_pb2.AdminCall], Awaitable[tuple[int, internal_pb2.AdminResult]]
]:
    async def handle(
        conn: LinkServerConnection, frame: Frame, call: internal_pb2.AdminCall
    ) -> tuple[int, internal_pb2.AdminResult]:
        method = methods.get(call.method)
        if method is None:
            raise ServiceError(internal_pb2.ERR_BAD_REQUEST, f"unknown admin method {call.method!r}")
        try:
            args = json.loads(call.args_json or "{}")
        except json.JSONDecodeError as exc:
            raise ServiceError(internal_pb2.ERR_BAD_REQUEST, f"arguments are not JSON: {exc}") from None
        if not isinstance(args, dict):
            raise ServiceError(internal_pb2.ERR_BAD_REQUEST, "arguments must be a JSON object")
        result = await method(args)
        return Cmd.ADMIN_RESULT, internal_pb2.AdminResult(result_json=json.dumps(result))

    return handle
