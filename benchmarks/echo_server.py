"""The baseline: a trivial TeamTalk-framed server, one process, no storage, no hops.

It answers a login with a user id (by name, first come first numbered), acks
each IMMsgData with a per-conversation counter as msg id and hands the
message to the recipient's connections (a group message: to every other
logged-in user), and echoes heartbeats. It runs the
same event loop (uvloop) and codec as the gateways, so a load run against it
measures the raw framing path: client machinery, loopback TCP, frame and
protobuf coding, and nothing of the cluster.

    python -m benchmarks.echo_server READY_FILE

writes ``{"pid": ..., "port": ...}`` to READY_FILE once listening on
127.0.0.1 (a free port), and stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import cast

import uvloop

from common.codec import FrameDecoder, ProtocolError, encode_frame
from common.commands import Cmd
from common.pb import base_pb2, login_pb2, message_pb2

GROUP_TYPES = (base_pb2.MSG_TYPE_GROUP_TEXT, base_pb2.MSG_TYPE_GROUP_AUDIO)


class EchoState:
    def __init__(self) -> None:
        self.user_ids: dict[str, int] = {}
        self.sessions: dict[int, list[EchoConn]] = {}
        self.next_msg_id: dict[tuple[int, int], int] = {}

    def user_id(self, name: str) -> int:
        return self.user_ids.setdefault(name, len(self.user_ids) + 1)


class EchoConn(asyncio.Protocol):
    def __init__(self, state: EchoState) -> None:
        self.state = state
        self.decoder = FrameDecoder(max_frame_size=64 * 1024)
        self.transport: asyncio.Transport | None = None
        self.user_id = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        conns = self.state.sessions.get(self.user_id)
        if conns is not None and self in conns:
            conns.remove(self)
            if not conns:
                del self.state.sessions[self.user_id]

    def data_received(self, data: bytes) -> None:
        self.decoder.feed(data)
        try:
            while (frame := self.decoder.next_frame()) is not None:
                self.on_frame(frame.command_id, frame.seq_num, frame.body)
        except ProtocolError:
            assert self.transport is not None
            self.transport.abort()

    def write(self, command_id: int, body: bytes, seq: int = 0) -> None:
        assert self.transport is not None
        self.transport.write(encode_frame(command_id, body, seq))

    def on_group_msg(self, msg: message_pb2.IMMsgData, seq: int) -> None:
        """A group message goes to every other logged-in user: the echo server hosts
        one group, of everyone (benchmarks/groups_bench.py logs in only its members)."""
        key = (0, msg.to_session_id)
        msg_id = self.state.next_msg_id.get(key, 0) + 1
        self.state.next_msg_id[key] = msg_id
        msg.msg_id = msg_id
        ack = message_pb2.IMMsgDataAck(
            user_id=self.user_id,
            session_id=msg.to_session_id,
            msg_id=msg_id,
            session_type=base_pb2.SESSION_TYPE_GROUP,
        )
        self.write(Cmd.MSG_DATA_ACK, ack.SerializeToString(), seq)
        push = encode_frame(Cmd.MSG_DATA, msg.SerializeToString(), 0)
        for user_id, conns in self.state.sessions.items():
            if user_id != self.user_id:
                for conn in conns:
                    assert conn.transport is not None
                    conn.transport.write(push)

    def on_frame(self, command: int, seq: int, body: bytes) -> None:
        if command == Cmd.MSG_DATA and self.user_id:
            msg = message_pb2.IMMsgData()
            msg.ParseFromString(body)
            msg.from_user_id = self.user_id
            if msg.msg_type in GROUP_TYPES:
                self.on_group_msg(msg, seq)
                return
            key = (min(self.user_id, msg.to_session_id), max(self.user_id, msg.to_session_id))
            msg_id = self.state.next_msg_id.get(key, 0) + 1
            self.state.next_msg_id[key] = msg_id
            msg.msg_id = msg_id
            ack = message_pb2.IMMsgDataAck(
                user_id=self.user_id,
                session_id=msg.to_session_id,
                msg_id=msg_id,
                session_type=base_pb2.SESSION_TYPE_SINGLE,
            )
            self.write(Cmd.MSG_DATA_ACK, ack.SerializeToString(), seq)
            push = msg.SerializeToString()
            for conn in self.state.sessions.get(msg.to_session_id, ()):
                conn.write(Cmd.MSG_DATA, push)
        elif command == Cmd.LOGIN_REQ:
            req = login_pb2.IMLoginReq()
            req.ParseFromString(body)
            self.user_id = self.state.user_id(req.user_name)
            self.state.sessions.setdefault(self.user_id, []).append(self)
            info = base_pb2.UserInfo(
                user_id=self.user_id,
                user_gender=0,
                user_nick_name=req.user_name,
                avatar_url="",
                department_id=0,
                email="",
                user_real_name="",
                user_tel="",
                user_domain="",
                status=0,
            )
            res = login_pb2.IMLoginRes(
                server_time=0,
                result_code=base_pb2.REFUSE_REASON_NONE,
                online_status=req.online_status,
                user_info=info,
            )
            self.write(Cmd.LOGIN_RES, res.SerializeToString(), seq)
        elif command == Cmd.HEARTBEAT:
            self.write(Cmd.HEARTBEAT, b"", seq)


async def serve(ready_file: Path) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    state = EchoState()
    server = await loop.create_server(lambda: EchoConn(state), "127.0.0.1", 0, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    tmp = ready_file.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "port": port}))
    os.replace(tmp, ready_file)
    await stop.wait()
    server.close()


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        sys.exit("usage: python -m benchmarks.echo_server READY_FILE")
    uvloop.run(serve(Path(argv[0])))


if __name__ == "__main__":
    main(sys.argv[1:])
