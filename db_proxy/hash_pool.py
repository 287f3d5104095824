"""The password hashing threads, shared by logins and bulk hashing (imports, admin changes).

scrypt releases the GIL, so the threads (``db_proxy.hash_threads``, one per
core by default) hash on every core. Two lanes: a login's verification
(:meth:`HashPool.submit`, what ``loop.run_in_executor`` calls) and bulk
hashing (:meth:`HashPool.submit_bulk`, a user import's thousand rows). Every
thread takes a login first when one waits, except that with more than one
thread, the first prefers bulk work: an import then uses every thread while
no one logs in, a login waits at most for one hash already running (about
50 ms) instead of behind a whole import, and an import still advances on one
thread through a login storm. A single thread always prefers logins.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

from db_proxy.passwords import hash_password, md5_hex

T = TypeVar("T")
LOGIN, BULK = 0, 1
_Job = tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class HashPool(Executor):
    def __init__(self, threads: int, name: str = "hash") -> None:
        if threads < 1:
            raise ValueError("a hash pool needs a thread")
        self._ready = threading.Condition()
        self._lanes: tuple[deque[_Job], deque[_Job]] = (deque(), deque())
        self._closed = False
        self._threads = [
            threading.Thread(
                target=self._work,
                args=(BULK if i == 0 and threads > 1 else LOGIN,),
                name=f"{name}-{i}",
                daemon=True,
            )
            for i in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def threads(self) -> int:
        return len(self._threads)

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """A login's hash (the priority lane)."""
        return self._put(LOGIN, fn, args, kwargs)

    def submit_bulk(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        return self._put(BULK, fn, args, kwargs)

    def waiting(self) -> tuple[int, int]:
        """Jobs queued (not yet running): (logins, bulk)."""
        with self._ready:
            return len(self._lanes[LOGIN]), len(self._lanes[BULK])

    def _put(
        self, lane: int, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Future[Any]:
        future: Future[Any] = Future()
        with self._ready:
            if self._closed:
                raise RuntimeError("the hash pool is shut down")
            self._lanes[lane].append((future, fn, args, kwargs))
            self._ready.notify_all()  # the threads prefer different lanes: wake each to look
        return future

    def _next(self, prefer: int) -> _Job | None:
        with self._ready:
            while True:
                for lane in (self._lanes[prefer], self._lanes[1 - prefer]):
                    if lane:
                        return lane.popleft()
                if self._closed:
                    return None
                self._ready.wait()

    def _work(self, prefer: int) -> None:
        while (job := self._next(prefer)) is not None:
            future, fn, args, kwargs = job
            if not future.set_running_or_notify_cancel():
                continue  # cancelled while queued (the import's request gave up)
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:
                future.set_exception(exc)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._ready:
            self._closed = True
            if cancel_futures:
                for lane in self._lanes:
                    while lane:
                        lane.popleft()[0].cancel()
            self._ready.notify_all()
        if wait:
            for thread in self._threads:
                thread.join()


async def hash_in_bulk(pool: HashPool | None, password: str, log2_n: int) -> str:
    """A plain password as stored, hashed in the pool's bulk lane (in a thread of its own without one)."""
    if pool is None:
        return await asyncio.to_thread(hash_password, md5_hex(password), log2_n)
    return await asyncio.wrap_future(pool.submit_bulk(hash_password, md5_hex(password), log2_n))
