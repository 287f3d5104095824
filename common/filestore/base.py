"""The blob store interface, shared by msfs and file_server."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass

from common.errors import ImError

# "<namespace>/<name>": one level of namespace ("msfs", "offline"), then a
# name of safe characters. Nothing a client sends becomes a path unchecked.
_NAMESPACE = r"[a-z][a-z0-9_]{0,31}"
_KEY = re.compile(rf"^{_NAMESPACE}/[A-Za-z0-9][A-Za-z0-9._-]{{0,127}}$")
_NAMESPACE_ONLY = re.compile(rf"^{_NAMESPACE}$")


class StoreError(ImError):
    """The store could not do what was asked (disk full, a bad key...)."""


def check_key(key: str) -> str:
    """``key`` if it is safe to become a path or an object name; else :class:`StoreError`."""
    # fullmatch: "$" alone would let a trailing newline through.
    if not _KEY.fullmatch(key) or ".." in key:
        raise StoreError(f"bad blob key {key!r}")
    return key


def check_namespace(namespace: str) -> str:
    if not _NAMESPACE_ONLY.fullmatch(namespace):
        raise StoreError(f"bad blob namespace {namespace!r}")
    return namespace


@dataclass(frozen=True, slots=True)
class BlobInfo:
    key: str
    size: int
    mtime: float  # unix seconds of the commit


class BlobWriter(ABC):
    """A blob being written: nothing is visible under its key before :meth:`commit`."""

    size: int  # bytes written so far

    @abstractmethod
    async def write(self, data: bytes) -> None: ...

    @abstractmethod
    async def commit(self) -> BlobInfo:
        """Make the blob durable and visible under its key (replacing any before)."""

    @abstractmethod
    async def abort(self) -> None:
        """Throw away what was written; safe to call after commit or twice."""


class BlobReader(ABC):
    size: int

    @abstractmethod
    async def read(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes from ``offset`` (fewer only at the end)."""

    @abstractmethod
    async def close(self) -> None: ...


class BlobStore(ABC):
    @abstractmethod
    async def create(self, key: str) -> BlobWriter: ...

    @abstractmethod
    async def open(self, key: str) -> BlobReader | None:
        """The committed blob, or None if there is none."""

    @abstractmethod
    async def stat(self, key: str) -> BlobInfo | None: ...

    @abstractmethod
    async def delete(self, key: str) -> bool:
        """Remove a blob; False if there was none."""

    @abstractmethod
    def keys(self, namespace: str) -> AsyncIterator[BlobInfo]:
        """Every committed blob of a namespace (for expiry sweeps), in no order."""

    async def close(self) -> None:
        return None
