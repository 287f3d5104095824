"""HashPool's two lanes, with jobs gated by events (no timing): a login waits for no
queued bulk work, bulk work still advances while logins keep coming, and shutdown
cancels what is queued."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from db_proxy.hash_pool import HashPool

WAIT = 10.0  # seconds: a bound on every wait, never reached when the pool works


class Gates:
    """Jobs that record their start and block until released."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.events: dict[str, threading.Event] = {}
        self.lock = threading.Condition()

    def job(self, name: str) -> str:
        with self.lock:
            self.started.append(name)
            self.lock.notify_all()
        if not self.event(name).wait(WAIT):
            raise TimeoutError(name)
        return name

    def event(self, name: str) -> threading.Event:
        with self.lock:
            return self.events.setdefault(name, threading.Event())

    def release(self, *names: str) -> None:
        for name in names:
            self.event(name).set()

    def wait_started(self, count: int) -> list[str]:
        with self.lock:
            assert self.lock.wait_for(lambda: len(self.started) >= count, WAIT), self.started
            return list(self.started)


@pytest.fixture
def gates() -> Iterator[Gates]:
    g = Gates()
    yield g
    g.release(*[f"b{i}" for i in range(50)], *[f"l{i}" for i in range(50)])


def test_a_login_goes_before_every_queued_bulk_job(gates: Gates) -> None:
    pool = HashPool(2)
    try:
        bulk = [pool.submit_bulk(gates.job, f"b{i}") for i in range(10)]
        assert sorted(gates.wait_started(2)) == ["b0", "b1"]  # both threads busy with bulk work
        login = pool.submit(gates.job, "l0")
        gates.release("b0", "b1")
        started = gates.wait_started(4)
        # One thread took the login, the other (preferring bulk) the next bulk job; the
        # other seven bulk jobs are still queued while the login runs.
        assert set(started[2:4]) == {"l0", "b2"}
        assert pool.waiting() == (0, 7)
        gates.release("l0")
        assert login.result(WAIT) == "l0"
        gates.release(*[f"b{i}" for i in range(10)])
        assert [f.result(WAIT) for f in bulk] == [f"b{i}" for i in range(10)]
    finally:
        pool.shutdown()


def test_bulk_work_advances_while_logins_keep_coming(gates: Gates) -> None:
    pool = HashPool(2)
    try:
        logins = [pool.submit(gates.job, f"l{i}") for i in range(20)]
        bulk = pool.submit_bulk(gates.job, "b0")
        gates.wait_started(2)
        gates.release("l0", "l1")
        # The thread that prefers bulk work takes b0 although many logins wait.
        started = gates.wait_started(4)
        assert "b0" in started and pool.waiting()[0] >= 16, (started, pool.waiting())
        gates.release("b0")
        assert bulk.result(WAIT) == "b0"
        gates.release(*[f"l{i}" for i in range(20)])
        assert [f.result(WAIT) for f in logins] == [f"l{i}" for i in range(20)]
    finally:
        pool.shutdown()


def test_one_thread_prefers_logins(gates: Gates) -> None:
    pool = HashPool(1)
    try:
        first = pool.submit_bulk(gates.job, "b0")
        gates.wait_started(1)
        later = pool.submit_bulk(gates.job, "b1")
        login = pool.submit(gates.job, "l0")
        gates.release("b0", "l0", "b1")
        assert (first.result(WAIT), login.result(WAIT), later.result(WAIT)) == ("b0", "l0", "b1")
        assert gates.started == ["b0", "l0", "b1"]
    finally:
        pool.shutdown()


def test_errors_reach_the_caller_and_shutdown_cancels_the_queue(gates: Gates) -> None:
    pool = HashPool(1)

    def boom() -> None:
        raise ValueError("bad")

    with pytest.raises(ValueError, match="bad"):
        pool.submit(boom).result(WAIT)
    running = pool.submit_bulk(gates.job, "b0")
    gates.wait_started(1)
    queued = pool.submit_bulk(gates.job, "b1")
    pool.shutdown(wait=False, cancel_futures=True)
    assert queued.cancelled()
    gates.release("b0")
    assert running.result(WAIT) == "b0"
    with pytest.raises(RuntimeError):
        pool.submit(gates.job, "l0")
