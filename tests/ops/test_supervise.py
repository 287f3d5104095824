"""``imctl up`` keeps its cluster up: a child that dies is restarted on its ports, with backoff.

The policy is tested on a fake clock; the whole of it on a real ``imctl up``
(a subprocess): kill -9 of one gateway leaves the other gateway's clients
connected, and the killed one is back on its port, taking logins again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from common.commands import Cmd
from imctl.ports import check_free, plan_ports
from imctl.supervise import Backoff, describe_exit
from tests.e2e.conftest import PASSWORD, REDIS_URL, TRACEBACK, create_users
from tests.support.databases import fresh_mysql_url
from tests.support.delivery_logs import fresh_delivery_log_url
from tests.support.ttclient import TTClient

ROOT = Path(__file__).resolve().parents[2]


def test_backoff_doubles_to_its_maximum_and_resets_after_a_good_run() -> None:
    backoff = Backoff()
    now = 100.0
    delays = []
    for _ in range(8):
        backoff.started(now)
        now += 0.5  # dies at once
        delay = backoff.exited(now)
        delays.append(delay)
        now += delay
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30]
    backoff.started(now)
    assert backoff.exited(now + 59) == 30  # not long enough to count as healthy
    backoff.started(now + 100)
    assert backoff.exited(now + 160) == 1  # ran a minute: a new failure
    assert backoff.exited(now + 161) == 2


def test_exits_are_described() -> None:
    assert describe_exit(-9) == "signal 9, SIGKILL"
    assert describe_exit(1) == "exit code 1"


def free_base(gateways: int = 2) -> int:
    """A --base-port whose whole plan is free now, below the ephemeral range the tests' clusters use."""
    for base in range(20000, 32000, 1000):
        plan = plan_ports(base, base + 80, gateways, 1, ["db-1"], files=True)
        try:
            check_free(plan)
        except ValueError:
            continue
        return base
    pytest.skip("no free port range for imctl up")


class Up:
    """``imctl up`` as a subprocess; its output lines as they come."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.out: list[str] = []
        self.err: list[str] = []
        self._changed = asyncio.Event()
        assert process.stdout is not None and process.stderr is not None
        self._tasks = [
            asyncio.create_task(self._read(process.stdout, self.out)),
            asyncio.create_task(self._read(process.stderr, self.err)),
        ]

    async def _read(self, stream: asyncio.StreamReader, into: list[str]) -> None:
        async for line in stream:
            into.append(line.decode(errors="replace").rstrip("\n"))
            self._changed.set()

    async def wait_for(self, text: str, lines: list[str], timeout: float) -> str:
        async with asyncio.timeout(timeout):
            while True:
                for line in lines:
                    if text in line:
                        return line
                if self.process.returncode is not None:
                    raise AssertionError(f"imctl up exited: {self.out} {self.err}")
                self._changed.clear()
                await self._changed.wait()

    async def stop(self) -> int:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            code = await self.process.wait()
        for task in self._tasks:
            task.cancel()
        return code


@pytest.fixture(params=["sqlite", pytest.param("mysql+redis", marks=[pytest.mark.mysql, pytest.mark.redis])])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[str]]:
    """imctl up's storage options: SQLite, or a fresh MariaDB database with Redis (and its delivery log)."""
    if request.param == "sqlite":
        yield ["--database-url", f"sqlite:///{tmp_path}/im.db"]
        return
    with fresh_mysql_url() as url, fresh_delivery_log_url("redis") as log_url:
        # And internal ports picked by the system: the restart must ask for the same ones.
        yield ["--database-url", url, "--redis-url", REDIS_URL, "--delivery-log", log_url, "--free-ports"]


@contextlib.asynccontextmanager
async def imctl_up(tmp_path: Path, base: int, *args: str) -> AsyncIterator[Up]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("IMCLUSTER_CONFIG", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "imctl", "up",
        "--base-port", str(base), "--http-port", str(base + 80),
        "--run-dir", str(tmp_path / "run"), *args,
        cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    up = Up(process)
    try:
        yield up
    finally:
        await up.stop()


async def login(port: int, name: str) -> TTClient:
    client = TTClient()
    await client.connect("127.0.0.1", port)
    res = await client.login(name, PASSWORD)
    assert res.result_code == 0, res
    return client


def pid_of(run_dir: Path, name: str) -> int:
    return int(json.loads((run_dir / f"{name}.ready").read_text())["pid"])


async def test_a_killed_gateway_comes_back_and_the_others_clients_stay(
    tmp_path: Path, storage: list[str]
) -> None:
    await create_users(storage[1], ["alice", "bob", "carol"], [])
    base = free_base()
    async with imctl_up(tmp_path, base, *storage) as up:
        await up.wait_for("Ctrl-C stops the cluster", up.out, 120)
        ports = re.search(
            r"msg-1 +port (\d+)\*, metrics (\d+)$", await up.wait_for("msg-1    port", up.out, 1)
        )
        assert ports is not None and int(ports[1]) == base
        metrics = int(ports[2])
        assert metrics == base + 10 or "--free-ports" in storage
        run_dir = tmp_path / "run"
        assert (run_dir / "msg-1.log").stat().st_size > 0 and (run_dir / "msg-1.out").exists()
        alice = await login(base, "alice")  # msg-1
        bob = await login(base + 1, "bob")  # msg-2
        try:
            os.kill(pid_of(run_dir, "msg-1"), signal.SIGKILL)
            await up.wait_for("msg-1 exited (signal 9, SIGKILL); restarting in 1 s", up.err, 30)
            async with asyncio.timeout(10):
                await alice.closed.wait()
            back = await up.wait_for("msg-1 is back", up.err, 60)
            assert f"port {base}, metrics_port {metrics}" in back
            # bob, on msg-2, never noticed: still connected and served.
            assert not bob.closed.is_set()
            await bob.unread()
            carol = await login(base, "carol")  # msg-1 again, on its port
            try:
                ack = await carol.send_text(bob.user_id, b"after the restart", timeout=20)
                assert ack.msg_id > 0
                push = await bob.next_push(Cmd.MSG_DATA, timeout=20)
                assert push.from_user_id == carol.user_id
            finally:
                await carol.close()
            assert not bob.closed.is_set()
        finally:
            await alice.close()
            await bob.close()
        assert await up.stop() == 0
    assert not any(TRACEBACK in line for line in up.err), up.err
    assert not (run_dir / "admin-token").exists()  # removed on the way out
    with socket.socket() as sock:  # every child is gone: its port is free again
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", base))
