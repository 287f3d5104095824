"""One abusive client, as its own process: ``python -m benchmarks.flooders KIND ...``.

Used by ``benchmarks/floods.py`` and ``tests/e2e/test_abuse_limits.py``: the
flood runs in a process of its own so that the victim's latency, measured by
the caller, is not the caller's own event loop being busy writing the flood.

Kinds (every one bounded by ``--seconds``, traffic to 127.0.0.0/8 only):

* ``requests``: logged in as ``--user``, IMUsersInfoReq as fast as it can write
  (closed by the server, it logs in again, as an attacker would);
* ``messages``: logged in, IMMsgData to ``--peer`` as fast as it can write;
* ``mixed``: both, alternating;
* ``profile``: logged in, IMChangeSignInfoReq with a new text each time;
* ``failed-logins``: ``--concurrency`` connections at a time, each a login
  with a wrong password, from ``--source``;
* ``prelogin``: ``--count`` connections from ``--source`` that never log in,
  held open until the end (or until the server closes them).

It prints ``ready`` once flooding, then one JSON line of what it did.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import uvloop  # noqa: E402

from common.codec import FrameDecoder, encode_frame  # noqa: E402
from common.commands import Cmd  # noqa: E402
from common.pb import base_pb2, buddy_pb2, login_pb2, message_pb2  # noqa: E402

IP_BIND_ADDRESS_NO_PORT = 24  # Linux: pick the port at connect, per destination: 25,000 fit
BATCH = 200


def login_frame(user: str, password_md5: str, seq: int = 1) -> bytes:
    req = login_pb2.IMLoginReq(
        user_name=user,
        password=password_md5,
        online_status=base_pb2.USER_STATUS_ONLINE,
        client_type=base_pb2.CLIENT_TYPE_WINDOWS,
        client_version="imcluster-flooder",
    )
    return encode_frame(Cmd.LOGIN_REQ, req.SerializeToString(), seq)


async def open_from(source: str, host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind((source, 0))
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock)


async def read_frames(reader: asyncio.StreamReader, counts: dict[str, int]) -> None:
    decoder = FrameDecoder(max_frame_size=16 << 20)
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(1 << 16):
            decoder.feed(data)
            while (frame := decoder.next_frame()) is not None:
                counts[f"0x{frame.command_id:04x}"] = counts.get(f"0x{frame.command_id:04x}", 0) + 1


async def logged_in(args: argparse.Namespace) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await open_from(args.source, args.host, args.port)
    writer.write(login_frame(args.user, args.password_md5))
    decoder = FrameDecoder(max_frame_size=16 << 20)
    while True:
        data = await asyncio.wait_for(reader.read(1 << 16), 10)
        if not data:
            raise SystemExit("closed during login")
        decoder.feed(data)
        frame = decoder.next_frame()
        if frame is not None:
            res = login_pb2.IMLoginRes()
            res.ParseFromString(frame.body)
            if res.result_code != 0:
                raise SystemExit(f"login refused: {res.result_code}")
            return reader, writer


def flood_frames(kind: str, peer: int, n: int) -> bytes:
    out = bytearray()
    for i in range(BATCH):
        k = kind if kind != "mixed" else ("requests" if i % 2 else "messages")
        if k == "requests":
            body = buddy_pb2.IMUsersInfoReq(user_id=0, user_id_list=[peer]).SerializeToString()
            out += encode_frame(Cmd.USERS_INFO_REQ, body, 0)
        elif k == "messages":
            msg = message_pb2.IMMsgData(
                from_user_id=0,
                to_session_id=peer,
                msg_id=n * BATCH + i + 1,
                create_time=0,
                msg_type=base_pb2.MSG_TYPE_SINGLE_TEXT,
                msg_data=b"flood",
            )
            out += encode_frame(Cmd.MSG_DATA, msg.SerializeToString(), 0)
        else:  # profile
            body = buddy_pb2.IMChangeSignInfoReq(user_id=0, sign_info=f"s{n}.{i}").SerializeToString()
            out += encode_frame(Cmd.CHANGE_SIGN_INFO_REQ, body, 0)
    return bytes(out)


async def logged_in_flood(args: argparse.Namespace) -> dict[str, Any]:
    """Flood on one logged-in connection; closed by the server, log in again and go on."""
    counts: dict[str, int] = {}
    sent = connections = 0
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        reader, writer = await logged_in(args)
        connections += 1
        if connections == 1:
            print("ready", flush=True)
        reading = asyncio.create_task(read_frames(reader, counts))
        with contextlib.suppress(ConnectionError, OSError, RuntimeError):  # RuntimeError: uvloop, closed
            while time.monotonic() < deadline and not reading.done() and not writer.is_closing():
                writer.write(flood_frames(args.kind, args.peer, sent // BATCH))
                sent += BATCH
                with contextlib.suppress(TimeoutError):
                    # A held-back flooder still stops on time.
                    await asyncio.wait_for(writer.drain(), max(0.01, deadline - time.monotonic()))
        writer.close()
        reading.cancel()
    return {"sent": sent, "connections": connections, "received": counts}


async def failed_logins(args: argparse.Namespace) -> dict[str, Any]:
    deadline = time.monotonic() + args.seconds
    tries = answered = 0

    async def one_after_another() -> None:
        nonlocal tries, answered
        while time.monotonic() < deadline:
            tries += 1
            try:
                reader, writer = await open_from(args.source, args.host, args.port)
            except OSError:
                continue
            try:
                writer.write(login_frame(args.user, "0" * 32))
                if await asyncio.wait_for(reader.read(1 << 16), 5):
                    answered += 1
            except (OSError, TimeoutError):
                pass
            finally:
                writer.close()

    print("ready", flush=True)
    await asyncio.gather(*(one_after_another() for _ in range(args.concurrency)))
    return {"tries": tries, "answered": answered}


async def prelogin(args: argparse.Namespace) -> dict[str, Any]:
    deadline = time.monotonic() + args.seconds
    held: list[asyncio.StreamWriter] = []
    closed_by_server = failed = 0
    gate = asyncio.Semaphore(args.concurrency)

    async def one() -> None:
        nonlocal closed_by_server, failed
        async with gate:
            try:
                reader, writer = await open_from(args.source, args.host, args.port)
            except OSError:
                failed += 1
                return
        held.append(writer)
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(reader.read(1), max(0.01, deadline - time.monotonic()))
        if time.monotonic() < deadline:
            closed_by_server += 1
        writer.close()

    print("ready", flush=True)
    await asyncio.gather(*(one() for _ in range(args.count)))
    return {"opened": len(held), "closed_by_server": closed_by_server, "failed": failed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "kind", choices=["requests", "messages", "mixed", "profile", "failed-logins", "prelogin"]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--source", default="127.0.0.1", help="local address to connect from")
    parser.add_argument("--user", default="")
    parser.add_argument("--password-md5", default="")
    parser.add_argument("--peer", type=int, default=1, help="user id messaged or asked about")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--count", type=int, default=1000, help="prelogin: connections")
    parser.add_argument("--concurrency", type=int, default=200)
    args = parser.parse_args(argv)
    run = {"failed-logins": failed_logins, "prelogin": prelogin}.get(args.kind, logged_in_flood)
    result = uvloop.run(run(args))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
