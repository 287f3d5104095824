"""file_server: relays online transfers between two clients and keeps
offline files, on tasks gateways ask it for over internal links.

Two ports: ``client_port`` for TeamTalk clients (file_server.client), and
``port`` for internal links from gateways (FILE_TASK, FILE_OFFLINE_READY,
FILE_OFFLINE_DELETE, FILE_SERVER_INFO). See docs/files.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from common.commands import Cmd, Rpcs
from common.filestore import StoreError, open_store
from common.link import Link, LinkServer, LinkSettings
from common.metrics import start_metrics_server
from common.pb import base_pb2, file_pb2, internal_pb2
from common.rpc import Commands
from file_server import metrics
from file_server.client import FileClient
from file_server.config import FileServerConfig
from file_server.metrics import (
    BYTES_RELAYED,
    BYTES_SERVED,
    BYTES_STORED,
    OFFLINE_DELETED,
    OFFLINE_SWEPT,
    REFUSALS,
    TASKS_MADE,
)
from file_server.offline import OfflineStore
from file_server.tasks import (
    DOWNLOAD,
    UPLOAD,
    Abort,
    Action,
    Close,
    Commit,
    Count,
    Limits,
    Read,
    Refusal,
    Send,
    Tasks,
    Write,
)
from file_server.ticket_key import ticket_keys

log = logging.getLogger("file")

TICK = 1.0  # seconds between checks of the task timers
SWEEP = 60.0  # seconds between sweeps of expired offline files
CREATE_TASK_ERROR = base_pb2.FILE_SERVER_ERRNO_CREATE_TASK_ERROR
NO_SUCH_FILE = base_pb2.FILE_SERVER_ERRNO_PULL_DATA_WITH_INVALID_TASK_ID


class FileServer(LinkServer):
    def __init__(self, config: FileServerConfig, clock: Callable[[], float] = time.monotonic) -> None:
        gateway = (
            Commands()
            .rpc(Rpcs.FILE_TASK, self.on_task)
            .rpc(Rpcs.FILE_OFFLINE_READY, self.on_offline_ready)
            .rpc(Rpcs.FILE_OFFLINE_DELETE, self.on_offline_delete)
            .rpc(Rpcs.FILE_SERVER_INFO, self.on_info)
        )
        super().__init__(
            {
                internal_pb2.ROLE_GATEWAY: gateway,
                internal_pb2.ROLE_ADMIN: Commands().rpc(Rpcs.FILE_SERVER_INFO, self.on_info),
            },
            role=internal_pb2.ROLE_FILE_SERVER,
            node_id=config.node_id,
            settings=LinkSettings.from_cluster(config.cluster),
        )
        self.config = config
        self.clock = clock
        self.offline = OfflineStore(open_store(config.store))
        limits = Limits(
            max_file_size=config.max_file_size,
            max_chunk_size=config.max_chunk_size,
            max_tasks_per_user=config.max_tasks_per_user,
            max_tasks=config.max_tasks,
            task_idle_timeout=config.task_idle_timeout,
            task_join_timeout=config.task_join_timeout,
        )
        self.tasks = Tasks(ticket_keys(config.cluster, config.store), limits)
        self.clients: set[FileClient] = set()
        self.jobs: set[asyncio.Task[Any]] = set()
        self.client_server: asyncio.AbstractServer | None = None
        self.client_port = 0

    def ip_list(self) -> list[base_pb2.IpAddr]:
        return [base_pb2.IpAddr(ip=self.config.advertise_ip, port=self.client_port)]

    async def listen_clients(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        self.client_server = await loop.create_server(
            lambda: FileClient(self), host, port, backlog=1024, reuse_address=True
        )
        self.client_port = int(self.client_server.sockets[0].getsockname()[1])
        return self.client_port

    def spawn(self, job: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``job``, tracked: shutdown waits for it."""
        task = asyncio.get_running_loop().create_task(job)
        self.jobs.add(task)
        task.add_done_callback(self.jobs.discard)
        return task

    # -- actions of the task machine -------------------------------------------------------

    async def carry_out(self, actions: Iterable[Action]) -> None:
        for action in actions:
            await self._do(action)

    async def _do(self, action: Action) -> None:
        if isinstance(action, Write | Read) and getattr(action.peer, "closing", False):
            # Its connection was closed meanwhile (a timeout, a delete): its task is gone
            # and its upload aborted; writing now would start a new one nobody commits.
            # (A Commit goes ahead: every byte is in, whether the uploader stayed or not.)
            return
        if isinstance(action, Send):
            peer = action.peer
            assert isinstance(peer, FileClient)
            if action.command == Cmd.FILE_PULL_DATA_RES and isinstance(
                action.message, file_pb2.IMFilePullDataRsp
            ):
                BYTES_RELAYED.inc(len(action.message.file_data))
            peer.send(action.command, action.message, action.seq)
        elif isinstance(action, Close):
            peer = action.peer
            assert isinstance(peer, FileClient)
            peer.close()
        elif isinstance(action, Count):
            REFUSALS.labels(action.reason).inc()
        elif isinstance(action, Write):
            await self.offline.write(action.key, action.data)
            BYTES_STORED.inc(len(action.data))
        elif isinstance(action, Abort):
            await self.offline.abort(action.key)
        elif isinstance(action, Commit):
            try:
                await self.offline.commit(action.offline)
            except StoreError as exc:
                self._store_failed(action.peer, exc)
                return
            await self.carry_out(action.after)
        elif isinstance(action, Read):
            try:
                data = await self.offline.read(action.key, action.offset, action.length)
            except StoreError as exc:
                self._store_failed(action.peer, exc)
                return
            peer = action.peer
            assert isinstance(peer, FileClient)
            action.reply.file_data = data
            BYTES_SERVED.inc(len(data))
            peer.send(Cmd.FILE_PULL_DATA_RES, action.reply, action.seq)
            await self.carry_out(action.after)

    def _store_failed(self, peer: object, exc: StoreError) -> None:
        REFUSALS.labels("store_error").inc()
        log.warning("store: %s", exc)
        if isinstance(peer, FileClient):
            peer.abort()

    async def tick(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            try:
                await self.carry_out(self.tasks.tick(self.clock()))
            except StoreError as exc:  # aborting an upload failed: nothing is left to undo
                log.warning("store: %s", exc)

    async def sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP)
            try:
                swept = await self.offline.sweep(time.time())
            except StoreError as exc:
                log.warning("sweep of offline files failed: %s", exc)
                continue
            if swept:
                OFFLINE_SWEPT.inc(swept)
                log.info("%d expired offline files removed", swept)

    # -- internal RPCs -----------------------------------------------------------------------------

    async def on_task(self, link: Link, msg: internal_pb2.FileTaskReq) -> internal_pb2.FileTaskRes:
        try:
            task = self.tasks.create(
                msg.from_user_id,
                msg.to_user_id,
                msg.file_name,
                msg.file_size,
                msg.trans_mode,
                self.clock(),
                time.time(),
                self.config.offline_ttl,
            )
        except Refusal as exc:
            REFUSALS.labels(exc.reason).inc()
            link.log.debug("FILE_TASK %d -> %d refused: %s", msg.from_user_id, msg.to_user_id, exc)
            return internal_pb2.FileTaskRes(result_code=CREATE_TASK_ERROR, reason=f"{exc.reason}: {exc}")
        if task.offline is not None:
            try:
                await self.offline.save_meta(task.offline)
            except StoreError as exc:
                self.tasks.drop(task.key)
                REFUSALS.labels("store_error").inc()
                return internal_pb2.FileTaskRes(result_code=CREATE_TASK_ERROR, reason=f"store_error: {exc}")
        TASKS_MADE.labels("offline" if task.offline is not None else "online").inc()
        sender, receiver = task.roles
        return internal_pb2.FileTaskRes(
            result_code=0,
            sender_task_id=task.tickets[sender],
            receiver_task_id=task.tickets[receiver],
            ip_addr_list=self.ip_list(),
        )

    async def on_offline_ready(
        self, link: Link, msg: internal_pb2.FileOfflineReadyReq
    ) -> internal_pb2.FileOfflineReadyRes:
        def refuse(reason: str, code: int, detail: str) -> internal_pb2.FileOfflineReadyRes:
            REFUSALS.labels(reason).inc()
            return internal_pb2.FileOfflineReadyRes(result_code=code, reason=f"{reason}: {detail}")

        key = self.tasks.verify(msg.task_id, msg.from_user_id, UPLOAD)
        if key is None:
            return refuse("bad_ticket", base_pb2.FILE_SERVER_ERRNO_LOGIN_INVALID_TOKEN, "not this sender's")
        offline = await self.offline.meta(key)
        if offline is None:
            return refuse("no_task", NO_SUCH_FILE, f"no offline file {key}")
        if offline.from_user != msg.from_user_id or offline.to_user != msg.to_user_id:
            return refuse(
                "not_participant",
                base_pb2.FILE_SERVER_ERRNO_INVALID_USER_FOR_TASK,
                f"{key} is not to that user",
            )
        if not offline.complete:
            return refuse("not_uploaded", NO_SUCH_FILE, f"{key} is not uploaded yet")
        return internal_pb2.FileOfflineReadyRes(
            result_code=0,
            task_key=key,
            receiver_task_id=self.tasks.mint(key, offline.to_user, DOWNLOAD),
            file_name=offline.name,
            file_size=offline.size,
            expires_at=int(offline.expires),
            ip_addr_list=self.ip_list(),
        )

    async def on_offline_delete(
        self, link: Link, msg: internal_pb2.FileOfflineDeleteReq
    ) -> internal_pb2.LinkOk:
        await self.carry_out(self.tasks.delete(msg.task_key))
        try:
            if await self.offline.delete(msg.task_key):
                OFFLINE_DELETED.inc()
        except StoreError as exc:  # a bad key: nothing by that name can exist
            link.log.debug("FILE_OFFLINE_DELETE %r: %s", msg.task_key, exc)
        return internal_pb2.LinkOk()

    async def on_info(self, link: Link, msg: internal_pb2.FileServerInfoReq) -> internal_pb2.FileServerInfo:
        return internal_pb2.FileServerInfo(ip_addr_list=self.ip_list())

    # -- shutdown -------------------------------------------------------------------------------------

    async def close(self, timeout: float = 3.0) -> None:
        """Stop accepting, close every client (its task ends), wait a bounded time, then the links."""
        if self.client_server is not None:
            self.client_server.close()
        for client in list(self.clients):
            client.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self.clients:
                    await asyncio.sleep(0.02)
        for client in list(self.clients):
            client.abort()
        if self.jobs:
            await asyncio.wait(list(self.jobs), timeout=timeout)
        for key in list(self.offline.uploads):
            await self.offline.abort(key)
        await super().close(timeout)
        await self.offline.close()

    def health(self) -> dict[str, Any]:
        return {
            "ok": True,
            "node_id": self.config.node_id,
            "tasks": self.tasks.open_count,
            "clients": len(self.clients),
            "gateways": sorted(link.node_id for link in self.linked.values()),
        }


async def serve(
    config: FileServerConfig, stop: asyncio.Event, announce: Callable[[dict[str, Any]], None]
) -> None:
    server = FileServer(config)
    port = await server.listen(config.host, config.port)
    client_port = await server.listen_clients(config.client_host, config.client_port)
    metrics.bind(server)
    exposed = await start_metrics_server(config.metrics_host, config.metrics_port, server.health)
    loop = asyncio.get_running_loop()
    timers = [loop.create_task(server.tick()), loop.create_task(server.sweep())]
    log.info(
        "file_server %s: links on %s:%d, clients on %s:%d (advertised as %s), store %s",
        config.node_id,
        config.host,
        port,
        config.client_host,
        client_port,
        config.advertise_ip,
        config.store,
    )
    announce({"port": port, "client_port": client_port, "metrics_port": exposed[1] if exposed else None})
    await stop.wait()
    for timer in timers:
        timer.cancel()
    for timer in timers:
        with contextlib.suppress(asyncio.CancelledError):
            await timer
    await server.close()
    if exposed is not None:
        await exposed[0].cleanup()
