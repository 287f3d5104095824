"""For fake db_proxies: DB_SAVE_MSGS answered item by item through a fake's single save."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from common.errors import describe, error_code
from common.link import Link
from common.pb import internal_pb2

Save = Callable[[Link, internal_pb2.DbSaveMsgReq], Awaitable[internal_pb2.DbSaveMsgRes]]
SaveBatch = Callable[[Link, internal_pb2.DbSaveMsgBatch], Awaitable[internal_pb2.DbSaveMsgBatchRes]]


def batch_of(save: Save) -> SaveBatch:
    """A DB_SAVE_MSGS handler that runs ``save`` on each item in order, each failing alone."""

    async def save_batch(link: Link, batch: internal_pb2.DbSaveMsgBatch) -> internal_pb2.DbSaveMsgBatchRes:
        res = internal_pb2.DbSaveMsgBatchRes()
        for item in batch.items:
            outcome = res.results.add()
            try:
                outcome.saved.CopyFrom(await save(link, item))
            except Exception as exc:
                outcome.error.code = error_code(exc)
                outcome.error.message = describe(exc)
        return res

    return save_batch
