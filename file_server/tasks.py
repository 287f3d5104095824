"""The transfer tasks of one file server: a sans-IO state machine.

Frames from clients go in (already decoded, with the time ``now``); what to
do comes out as a list of actions (send this frame to that peer, close that
peer, write, read or commit offline data), which the asyncio adapter
(file_server.client) carries out in order. Nothing here touches a socket or
the store, so every rule is tested on a fake clock.

Online: the sender and the receiver log in (either first); when both are in
the receiver hears PEER_READY and pulls; each pull goes to the sender, whose
chunk is checked against the pull and forwarded. Offline upload: this
server pulls from the uploader, 32 KiB at a time, into the store, and
commits after the last byte. Offline download: the downloader pulls from
the store, any offset, a chunk at a time.

A peer is an opaque handle (the connection); every frame relayed to a peer
carries that peer's own ticket as its task id. Whatever breaks a rule
raises :class:`Refusal` with a reason (a metric label): the adapter closes
that one connection.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import Message

from common import file_ticket
from common.commands import Cmd
from common.errors import InvalidArgument
from common.pb import base_pb2, file_pb2

ONLINE = base_pb2.FILE_TYPE_ONLINE
OFFLINE = base_pb2.FILE_TYPE_OFFLINE
SENDER = base_pb2.CLIENT_REALTIME_SENDER
RECEIVER = base_pb2.CLIENT_REALTIME_RECVER
UPLOAD = base_pb2.CLIENT_OFFLINE_UPLOAD
DOWNLOAD = base_pb2.CLIENT_OFFLINE_DOWNLOAD
UPLOAD_CHUNK = 32 * 1024  # what TeamTalk's file server asks an uploader for

# IMFileLoginRsp result codes of refusals.
BAD_TICKET = base_pb2.FILE_SERVER_ERRNO_LOGIN_INVALID_TOKEN
NOT_YOURS = base_pb2.FILE_SERVER_ERRNO_INVALID_USER_FOR_TASK

Peer = Hashable


class Refusal(InvalidArgument):
    """A request or frame refused; ``reason`` labels the metric, ``result_code`` is the client's."""

    def __init__(self, reason: str, detail: str = "", code: int = BAD_TICKET) -> None:
        super().__init__(detail or reason)
        self.reason = reason
        self.result_code = code


# Every reason a refusal may have, so each metric series exists from the start.
REASONS = (
    "too_large",
    "empty",
    "same_user",
    "too_many_tasks",
    "too_many_user_tasks",
    "bad_ticket",
    "not_participant",
    "no_task",
    "already_joined",
    "not_uploaded",
    "bad_frame",
    "before_login",
    "not_expected",
    "wrong_task",
    "bad_offset",
    "bad_size",
    "too_much_data",
    "join_timeout",
    "idle_timeout",
    "login_timeout",
    "too_many_connections",
    "store_error",
    "deleted",
)


class State(enum.Enum):
    WAITING = "waiting"  # for its peers to log in
    TRANSFERRING = "transferring"
    DONE = "done"


@dataclass(frozen=True, slots=True)
class Limits:
    max_file_size: int
    max_chunk_size: int
    max_tasks_per_user: int
    max_tasks: int
    task_idle_timeout: float
    task_join_timeout: float


@dataclass(frozen=True, slots=True)
class Offline:
    """What the store keeps of an offline file (its ``.meta``)."""

    key: str
    from_user: int
    to_user: int
    name: str
    size: int
    created: float  # unix seconds
    expires: float
    complete: bool


# -- actions ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    peer: Peer
    command: int
    message: Message
    seq: int = 0


@dataclass(frozen=True, slots=True)
class Close:
    """Close after what was sent to it is flushed."""

    peer: Peer


@dataclass(frozen=True, slots=True)
class Count:
    """A refusal or drop to count (imcluster_file_refusals_total{reason})."""

    reason: str


@dataclass(frozen=True, slots=True)
class Write:
    """Append to the upload of ``key`` (the first write starts it), unless ``peer`` was closed meanwhile."""

    peer: Peer
    key: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Commit:
    """Commit the upload of ``key`` and mark its meta complete; then ``after``."""

    peer: Peer
    offline: Offline
    after: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Abort:
    key: str


@dataclass(frozen=True, slots=True)
class Read:
    """Read a chunk of ``key``, send it as the IMFilePullDataRsp ``reply``; then ``after``."""

    peer: Peer
    key: str
    offset: int
    length: int
    reply: file_pb2.IMFilePullDataRsp
    seq: int
    after: tuple[Any, ...]


Action = Send | Close | Count | Write | Commit | Abort | Read


# -- tasks -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pull:
    offset: int
    size: int
    seq: int


@dataclass(slots=True)
class Task:
    key: str
    mode: int
    from_user: int
    to_user: int
    name: str
    size: int
    created: float  # the table's clock
    last_active: float
    tickets: dict[int, str]  # role -> that participant's ticket
    peers: dict[int, Peer] = field(default_factory=dict)  # role -> its connection, once logged in
    state: State = State.WAITING
    done: int = 0  # bytes relayed (online) or stored (upload)
    pending: Pull | None = None  # the pull awaiting its chunk
    offline: Offline | None = None  # an upload's meta

    @property
    def roles(self) -> tuple[int, int]:
        return (SENDER, RECEIVER) if self.mode == ONLINE else (UPLOAD, DOWNLOAD)

    def user_of(self, role: int) -> int:
        return self.from_user if role in (SENDER, UPLOAD) else self.to_user


@dataclass(slots=True)
class Download:
    """One downloader's session on an offline file (any number may run)."""

    offline: Offline
    user_id: int
    ticket: str
    last_active: float


@dataclass(frozen=True, slots=True)
class Joined:
    """Who a logged-in peer is."""

    key: str
    role: int
    user_id: int
    ticket: str


class Tasks:
    """Every open task and download of this server; time comes in as ``now``."""

    def __init__(self, keys: tuple[bytes, ...], limits: Limits) -> None:
        self.keys = keys
        self.limits = limits
        self.tasks: dict[str, Task] = {}
        self.downloads: dict[Peer, Download] = {}
        self.joined: dict[Peer, Joined] = {}
        self.per_user: dict[int, int] = {}

    # -- tickets ---------------------------------------------------------------------

    def mint(self, key: str, user_id: int, role: int) -> str:
        return file_ticket.mint(self.keys[0], key, user_id, role)

    def verify(self, ticket: str, user_id: int, role: int) -> str | None:
        for secret in self.keys:
            key = file_ticket.verify(secret, ticket, user_id, role)
            if key is not None:
                return key
        return None

    # -- counting ----------------------------------------------------------------------

    @property
    def open_count(self) -> int:
        return len(self.tasks) + len(self.downloads)

    def _count(self, user_ids: tuple[int, ...], delta: int) -> None:
        for user_id in set(user_ids):
            n = self.per_user.get(user_id, 0) + delta
            if n > 0:
                self.per_user[user_id] = n
            else:
                self.per_user.pop(user_id, None)

    def _room_for(self, user_ids: tuple[int, ...]) -> None:
        if self.open_count >= self.limits.max_tasks:
            raise Refusal("too_many_tasks", f"{self.open_count} tasks open")
        for user_id in user_ids:
            if self.per_user.get(user_id, 0) >= self.limits.max_tasks_per_user:
                raise Refusal("too_many_user_tasks", f"user {user_id} has {self.per_user[user_id]} open")

    # -- FILE_TASK -----------------------------------------------------------------------

    def create(
        self,
        from_user: int,
        to_user: int,
        name: str,
        size: int,
        mode: int,
        now: float,
        wall: float,
        ttl: float,
    ) -> Task:
        """A new task (its participants' tickets in ``tickets``); raises Refusal."""
        if size > self.limits.max_file_size:
            raise Refusal("too_large", f"{size} bytes > max_file_size {self.limits.max_file_size}")
        if size <= 0:
            raise Refusal("empty", "an empty file")
        if from_user == to_user or from_user == 0 or to_user == 0:
            raise Refusal("same_user", f"from {from_user} to {to_user}")
        if mode not in (ONLINE, OFFLINE):
            raise Refusal("bad_frame", f"trans_mode {mode}")
        self._room_for((from_user, to_user))
        key = file_ticket.new_task_key()
        task = Task(key, mode, from_user, to_user, name, size, now, now, {})
        for role in task.roles:
            task.tickets[role] = self.mint(key, task.user_of(role), role)
        if mode == OFFLINE:
            task.offline = Offline(key, from_user, to_user, name, size, wall, wall + ttl, complete=False)
        self._add(task)
        return task

    def _add(self, task: Task) -> None:
        self.tasks[task.key] = task
        self._count((task.from_user, task.to_user), +1)

    def drop(self, key: str) -> list[Action]:
        """End a task: its peers are closed (after what was sent to them)."""
        task = self.tasks.pop(key, None)
        if task is None:
            return []
        task.state = State.DONE
        self._count((task.from_user, task.to_user), -1)
        actions: list[Action] = []
        if task.mode == OFFLINE and task.done < task.size:
            actions.append(Abort(key))
        for peer in task.peers.values():
            self.joined.pop(peer, None)
            actions.append(Close(peer))
        return actions

    # -- IMFileLoginReq --------------------------------------------------------------------

    def login(
        self, peer: Peer, msg: file_pb2.IMFileLoginReq, seq: int, now: float, stored: Offline | None = None
    ) -> list[Action]:
        """Join a task; ``stored`` is the offline file's meta when the adapter found one.

        Raises Refusal (the adapter answers with its code and closes).
        """
        role = msg.file_role
        key = self.verify(msg.task_id, msg.user_id, role)
        if key is None:
            raise Refusal("bad_ticket", f"ticket not for user {msg.user_id} as role {role}")
        if role == DOWNLOAD:
            return self._download(peer, key, msg, seq, now, stored)
        task = self.tasks.get(key)
        if task is None and role == UPLOAD and stored is not None and not stored.complete:
            # An upload after a restart: the task comes back from its meta.
            self._room_for((stored.from_user, stored.to_user))
            task = Task(
                key, OFFLINE, stored.from_user, stored.to_user, stored.name, stored.size, now, now, {}
            )
            for r in task.roles:
                task.tickets[r] = self.mint(key, task.user_of(r), r)
            task.offline = stored
            self._add(task)
        if task is None or task.state is State.DONE:
            raise Refusal("no_task", f"no open task {key}", NOT_YOURS)
        if role not in task.roles or task.user_of(role) != msg.user_id:
            raise Refusal("not_participant", f"user {msg.user_id} is not role {role} of {key}", NOT_YOURS)
        if role in task.peers:
            raise Refusal("already_joined", f"role {role} of {key} is already in", NOT_YOURS)
        task.peers[role] = peer
        task.last_active = now
        self.joined[peer] = Joined(key, role, msg.user_id, msg.task_id)
        actions: list[Action] = [Send(peer, Cmd.FILE_LOGIN_RES, ok_login(msg.task_id), seq)]
        if task.mode == ONLINE and len(task.peers) == 2:
            task.state = State.TRANSFERRING
            receiver = task.peers[RECEIVER]
            ready = file_pb2.IMFileState(
                state=base_pb2.CLIENT_FILE_PEER_READY, task_id=task.tickets[RECEIVER], user_id=task.from_user
            )
            actions.append(Send(receiver, Cmd.FILE_STATE, ready))
        elif task.mode == OFFLINE:
            task.state = State.TRANSFERRING
            task.done = 0  # a new upload starts over: what an earlier one wrote was aborted
            actions.append(Abort(key))
            actions.append(self._ask_upload(task, peer))
        return actions

    def _download(
        self, peer: Peer, key: str, msg: file_pb2.IMFileLoginReq, seq: int, now: float, stored: Offline | None
    ) -> list[Action]:
        if stored is None or stored.key != key:
            raise Refusal("no_task", f"no offline file {key}", NOT_YOURS)
        if not stored.complete:
            raise Refusal("not_uploaded", f"offline file {key} is not uploaded yet", NOT_YOURS)
        if stored.to_user != msg.user_id:
            raise Refusal("not_participant", f"user {msg.user_id} is not the receiver of {key}", NOT_YOURS)
        self._room_for((msg.user_id,))
        self.downloads[peer] = Download(stored, msg.user_id, msg.task_id, now)
        self._count((msg.user_id,), +1)
        self.joined[peer] = Joined(key, DOWNLOAD, msg.user_id, msg.task_id)
        return [Send(peer, Cmd.FILE_LOGIN_RES, ok_login(msg.task_id), seq)]

    def _ask_upload(self, task: Task, peer: Peer) -> Send:
        size = min(UPLOAD_CHUNK, self.limits.max_chunk_size, task.size - task.done)
        task.pending = Pull(task.done, size, 0)
        ask = file_pb2.IMFilePullDataReq(
            task_id=task.tickets[UPLOAD],
            user_id=task.from_user,
            trans_mode=OFFLINE,
            offset=task.done,
            data_size=size,
        )
        return Send(peer, Cmd.FILE_PULL_DATA_REQ, ask)

    # -- frames of logged-in peers ---------------------------------------------------------------

    def _who(self, peer: Peer, task_id: str, user_id: int) -> Joined:
        joined = self.joined.get(peer)
        if joined is None:
            raise Refusal("before_login", "a transfer frame before login")
        if task_id != joined.ticket or user_id != joined.user_id:
            raise Refusal(
                "wrong_task", f"frame for {task_id!r} user {user_id}, logged in as {joined.user_id}"
            )
        return joined

    def _task(self, joined: Joined, now: float) -> Task:
        task = self.tasks.get(joined.key)
        if task is None or task.state is not State.TRANSFERRING:
            raise Refusal("not_expected", "the task is not transferring")
        task.last_active = now
        return task

    def pull_req(self, peer: Peer, msg: file_pb2.IMFilePullDataReq, seq: int, now: float) -> list[Action]:
        joined = self._who(peer, msg.task_id, msg.user_id)
        if joined.role == DOWNLOAD:
            return self._read(peer, msg, seq, now)
        if joined.role != RECEIVER:
            raise Refusal("not_expected", f"a pull from role {joined.role}")
        task = self._task(joined, now)
        if task.pending is not None:
            raise Refusal("not_expected", "a pull while one is outstanding")
        self._check_pull(msg.offset, msg.data_size, task.size)
        task.pending = Pull(msg.offset, msg.data_size, seq)
        forward = file_pb2.IMFilePullDataReq()
        forward.CopyFrom(msg)
        forward.task_id = task.tickets[SENDER]
        return [Send(task.peers[SENDER], Cmd.FILE_PULL_DATA_REQ, forward, seq)]

    def _check_pull(self, offset: int, size: int, file_size: int) -> None:
        if offset >= file_size:
            raise Refusal("bad_offset", f"offset {offset} of a {file_size}-byte file")
        if not 0 < size <= self.limits.max_chunk_size:
            raise Refusal("bad_size", f"data_size {size} (max_chunk_size {self.limits.max_chunk_size})")

    def _read(self, peer: Peer, msg: file_pb2.IMFilePullDataReq, seq: int, now: float) -> list[Action]:
        download = self.downloads[peer]
        download.last_active = now
        offline = download.offline
        self._check_pull(msg.offset, msg.data_size, offline.size)
        length = min(msg.data_size, offline.size - msg.offset)
        reply = file_pb2.IMFilePullDataRsp(
            result_code=0, task_id=download.ticket, user_id=msg.user_id, offset=msg.offset, file_data=b""
        )
        after: tuple[Action, ...] = ()
        if msg.offset + length == offline.size:
            done = file_pb2.IMFileState(
                state=base_pb2.CLIENT_FILE_DONE, task_id=download.ticket, user_id=offline.from_user
            )
            after = (Send(peer, Cmd.FILE_STATE, done),)
        return [Read(peer, offline.key, msg.offset, length, reply, seq, after)]

    def pull_rsp(self, peer: Peer, msg: file_pb2.IMFilePullDataRsp, now: float) -> list[Action]:
        joined = self._who(peer, msg.task_id, msg.user_id)
        if joined.role not in (SENDER, UPLOAD):
            raise Refusal("not_expected", f"a chunk from role {joined.role}")
        task = self._task(joined, now)
        pull = task.pending
        if pull is None:
            raise Refusal("not_expected", "a chunk nobody asked for")
        data = msg.file_data
        if msg.offset != pull.offset:
            raise Refusal("bad_offset", f"chunk at {msg.offset}, asked for {pull.offset}")
        if len(data) > pull.size or msg.offset + len(data) > task.size:
            raise Refusal("too_much_data", f"{len(data)} bytes at {msg.offset}, asked {pull.size}")
        task.pending = None
        if joined.role == SENDER:
            task.done += len(data)
            forward = file_pb2.IMFilePullDataRsp()
            forward.CopyFrom(msg)
            forward.task_id = task.tickets[RECEIVER]
            return [Send(task.peers[RECEIVER], Cmd.FILE_PULL_DATA_RES, forward, pull.seq)]
        if not data or msg.result_code != 0:
            raise Refusal("bad_size", f"an empty or failed chunk (result {msg.result_code})")
        task.done += len(data)
        actions: list[Action] = [Write(peer, task.key, data)]
        if task.done < task.size:
            actions.append(self._ask_upload(task, peer))
            return actions
        assert task.offline is not None
        done = file_pb2.IMFileState(
            state=base_pb2.CLIENT_FILE_DONE, task_id=joined.ticket, user_id=task.from_user
        )
        # The task leaves the table now; the upload is the adapter's to commit.
        self.tasks.pop(task.key, None)
        task.state = State.DONE
        self._count((task.from_user, task.to_user), -1)
        self.joined.pop(peer, None)
        actions.append(Commit(peer, task.offline, (Send(peer, Cmd.FILE_STATE, done), Close(peer))))
        return actions

    def state(self, peer: Peer, msg: file_pb2.IMFileState, now: float) -> list[Action]:
        """DONE, CANCEL or REFUSE: told to the other peer; the task ends."""
        joined = self._who(peer, msg.task_id, msg.user_id)
        if msg.state == base_pb2.CLIENT_FILE_PEER_READY:
            raise Refusal("not_expected", "PEER_READY is the server's to send")
        if joined.role == DOWNLOAD:
            return self.gone(peer, now)
        task = self.tasks.get(joined.key)
        if task is None:
            return [Close(peer)]
        actions: list[Action] = []
        for role, other in task.peers.items():
            if other != peer:
                forward = file_pb2.IMFileState(
                    state=msg.state, task_id=task.tickets[role], user_id=msg.user_id
                )
                actions.append(Send(other, Cmd.FILE_STATE, forward))
        return actions + self.drop(task.key)

    def gone(self, peer: Peer, now: float) -> list[Action]:
        """A peer's connection closed (or its session ended)."""
        joined = self.joined.pop(peer, None)
        if joined is None:
            return []
        download = self.downloads.pop(peer, None)
        if download is not None:
            self._count((download.user_id,), -1)
            return [Close(peer)]
        task = self.tasks.get(joined.key)
        if task is None:
            return []
        task.peers.pop(joined.role, None)
        if task.state is State.TRANSFERRING:
            if task.mode == ONLINE:
                # Half a transfer cannot go on: the other side hears CANCEL.
                actions: list[Action] = []
                for role, other in task.peers.items():
                    cancel = file_pb2.IMFileState(
                        state=base_pb2.CLIENT_FILE_CANCEL, task_id=task.tickets[role], user_id=joined.user_id
                    )
                    actions.append(Send(other, Cmd.FILE_STATE, cancel))
                return actions + self.drop(task.key)
            # An upload cut short waits for its uploader to log in again (and start over).
            task.state = State.WAITING
            task.pending = None
            task.last_active = now
            return [Abort(task.key)]
        return []

    def delete(self, key: str) -> list[Action]:
        """An offline file deleted: its open downloads and upload end."""
        actions = self.drop(key)
        for peer, download in list(self.downloads.items()):
            if download.offline.key == key:
                self.joined.pop(peer, None)
                del self.downloads[peer]
                self._count((download.user_id,), -1)
                actions.append(Close(peer))
        return actions

    # -- timers -------------------------------------------------------------------------------------

    def tick(self, now: float) -> list[Action]:
        """Drop tasks whose peers did not come in time, and transfers gone quiet."""
        actions: list[Action] = []
        for task in list(self.tasks.values()):
            if task.state is State.WAITING and now - task.last_active >= self.limits.task_join_timeout:
                actions += [*self.drop(task.key), Count("join_timeout")]
            elif task.state is State.TRANSFERRING and now - task.last_active >= self.limits.task_idle_timeout:
                actions += [*self.drop(task.key), Count("idle_timeout")]
        for peer, download in list(self.downloads.items()):
            if now - download.last_active >= self.limits.task_idle_timeout:
                actions += [*self.gone(peer, now), Count("idle_timeout")]
        return actions


def ok_login(ticket: str) -> file_pb2.IMFileLoginRsp:
    return file_pb2.IMFileLoginRsp(result_code=0, task_id=ticket)
