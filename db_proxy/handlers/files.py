"""db_proxy commands for offline files: the list each receiver sees.

The gateway calls these with ``user_id`` the logged-in user, and adds a row
only once the file server has vouched for the upload (FILE_OFFLINE_READY).
"""

from __future__ import annotations

import logging
import time

from common.commands import Rpcs
from common.link import Link
from common.pb import base_pb2, file_pb2, internal_pb2
from common.rpc import Commands
from db_proxy.storage.model import OfflineFile, Store

log = logging.getLogger("db.files")

MAX_OFFLINE_LISTED = 100  # newest first; a receiver deletes what it took and sees older ones next


class FileHandlers:
    def __init__(self, store: Store) -> None:
        self.store = store

    def commands(self) -> Commands:
        """The commands a gateway may send for this part of db_proxy."""
        return (
            Commands()
            .rpc(Rpcs.FILE_HAS_OFFLINE, self.has_offline)
            .rpc(Rpcs.DB_OFFLINE_FILE_ADD, self.add)
            .rpc(Rpcs.DB_OFFLINE_FILE_DEL, self.delete)
        )

    async def has_offline(
        self, link: Link, req: file_pb2.IMFileHasOfflineReq
    ) -> file_pb2.IMFileHasOfflineRsp:
        files = await self.store.offline_files(req.user_id, int(time.time()), MAX_OFFLINE_LISTED)
        return file_pb2.IMFileHasOfflineRsp(
            user_id=req.user_id,
            offline_file_list=[
                base_pb2.OfflineFileInfo(
                    from_user_id=f.from_user_id,
                    task_id=f.receiver_task_id,
                    file_name=f.file_name,
                    file_size=f.file_size,
                )
                for f in files
            ],
            attach_data=req.attach_data,
        )

    async def add(self, link: Link, req: internal_pb2.DbOfflineFileAdd) -> internal_pb2.LinkOk:
        added = await self.store.add_offline_file(
            OfflineFile(
                from_user_id=req.from_user_id,
                to_user_id=req.to_user_id,
                task_key=req.task_key,
                receiver_task_id=req.receiver_task_id,
                file_name=req.file_name,
                file_size=req.file_size,
                created=int(time.time()),
                expires_at=req.expires_at,
            )
        )
        if not added:
            log.debug("offline file %s listed already", req.task_key)
        return internal_pb2.LinkOk()

    async def delete(
        self, link: Link, req: internal_pb2.DbOfflineFileDel
    ) -> internal_pb2.DbOfflineFileDelRes:
        removed = await self.store.delete_offline_file(req.user_id, req.task_key)
        return internal_pb2.DbOfflineFileDelRes(deleted=removed is not None)
