"""The server side of AdminCall: a table from method name to coroutine.

Each admin method takes the decoded JSON arguments and returns a JSON-able
dict; it raises the error taxonomy (common.errors) to refuse.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from common.errors import InvalidArgument
from common.link import Link
from common.pb import internal_pb2
from common.rpc import RpcHandler

AdminMethod = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def admin_handler(
    methods: Mapping[str, AdminMethod],
) -> RpcHandler[internal_pb2.AdminCall, internal_pb2.AdminResult]:
    async def handle(link: Link, call: internal_pb2.AdminCall) -> internal_pb2.AdminResult:
        # A proto2 string holding invalid UTF-8 arrives as bytes: no method
        # has such a name, and json.loads would try to decode it.
        method = methods.get(call.method) if isinstance(call.method, str) else None
        if method is None:
            raise InvalidArgument(f"unknown admin method {call.method!r}")
        if not isinstance(call.args_json, str):
            raise InvalidArgument("arguments are not UTF-8")
        try:
            args = json.loads(call.args_json or "{}")
        except (ValueError, RecursionError) as exc:
            # ValueError: not JSON, or an integer of more digits than Python
            # converts; RecursionError: nested deeper than the parser goes.
            raise InvalidArgument(f"arguments are not JSON: {type(exc).__name__}: {exc}"[:200]) from None
        if not isinstance(args, dict):
            raise InvalidArgument("arguments must be a JSON object")
        result = await method(args)
        return internal_pb2.AdminResult(result_json=json.dumps(result))

    return handle
