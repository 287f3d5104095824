"""INFO is for what an operator needs: a cluster carrying messages writes a bounded number of INFO lines.

Per-message, per-request and per-connection events (a receipt, a read ack, a
push, a refused login, a connection that comes and goes) are DEBUG; a short
run with 200 messages, their receipts and read acks, and 20 logins, must not
grow the logs with the traffic.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from common.commands import Cmd
from common.pb import base_pb2, message_pb2
from tests.e2e.conftest import Cluster
from tests.support.ttclient import TTClient

MESSAGES = 200
CHURN = 20
MAX_INFO_LINES = 50
LEVEL = re.compile(r"^\S+ \S+ (INFO|WARNING|ERROR|CRITICAL) (\S+) (\S+): (.*)$")


def _lines(run_dir: Path, level: str) -> list[str]:
    found = []
    for log_file in sorted(run_dir.glob("*.log")):
        for line in log_file.read_text(errors="replace").splitlines():
            match = LEVEL.match(line)
            if match and match.group(1) == level:
                found.append(line)
    return found


async def test_traffic_writes_a_bounded_number_of_info_lines(any_cluster: Cluster) -> None:
    cluster = any_cluster
    run_dir = cluster.local.run_dir
    before = len(_lines(run_dir, "INFO"))
    warnings_before = len(_lines(run_dir, "WARNING"))
    alice = await cluster.client("alice", "msg-1")
    bob = await cluster.client("bob", "msg-2")
    try:
        for i in range(MESSAGES):
            ack = await alice.send_text(bob.user_id, f"hello {i}".encode(), client_msg_id=i + 1)
            push = await bob.next_push(Cmd.MSG_DATA)
            assert push.msg_id == ack.msg_id
            # What a TeamTalk client sends back: a receipt, then (sometimes) a read ack.
            bob.send(
                Cmd.MSG_DATA_ACK,
                message_pb2.IMMsgDataAck(
                    user_id=bob.user_id,
                    session_id=alice.user_id,
                    msg_id=push.msg_id,
                    session_type=base_pb2.SESSION_TYPE_SINGLE,
                ),
            )
            if i % 10 == 9:
                bob.send(
                    Cmd.MSG_READ_ACK,
                    message_pb2.IMMsgDataReadAck(
                        user_id=bob.user_id,
                        session_id=alice.user_id,
                        msg_id=push.msg_id,
                        session_type=base_pb2.SESSION_TYPE_SINGLE,
                    ),
                )
        await bob.unread()  # the receipts and read acks before it are handled
        for i in range(CHURN):  # connections come and go, a password is wrong
            carol = await cluster.client("carol", f"msg-{i % 2 + 1}")
            wrong = TTClient()
            await wrong.connect("127.0.0.1", cluster.gateway_port("msg-1"))
            assert (await wrong.login("dave", "not the password")).result_code != 0
            await wrong.close()
            await carol.close()
    finally:
        await alice.close()
        await bob.close()
    cluster.local.stop()
    during = _lines(run_dir, "INFO")[before:]
    shapes = Counter(LEVEL.sub(r"\2 \3", line) for line in during)
    assert len(during) < MAX_INFO_LINES, f"{len(during)} INFO lines for {MESSAGES} messages: {shapes}"
    print(f"{len(during)} INFO lines for {MESSAGES} messages and {CHURN} logins: {dict(shapes)}")
    assert not [line for line in during if "0x0302" in line], "a receipt logged at INFO"
    assert not _lines(run_dir, "WARNING")[warnings_before:]
