"""Where pictures (msfs) and offline files (file_server) are kept.

:class:`BlobStore` is the interface: named blobs written as a stream and
committed atomically, read back by range. :class:`DiskStore` keeps them in
sharded directories on a local disk (the default); an S3-compatible object
store can take its place for several hosts by implementing the same five
methods (docs/msfs.md says how each maps).
"""

from common.filestore.base import (
    BlobInfo,
    BlobReader,
    BlobStore,
    BlobWriter,
    StoreError,
    check_key,
    check_namespace,
)
from common.filestore.disk import DiskStore

__all__ = [
    "BlobInfo",
    "BlobReader",
    "BlobStore",
    "BlobWriter",
    "DiskStore",
    "StoreError",
    "check_key",
    "check_namespace",
    "open_store",
]


def open_store(url: str) -> BlobStore:
    """The store a config names: a directory path, or ``file:///path``."""
    from common.config import ConfigError

    if url.startswith("file://"):
        return DiskStore(url.removeprefix("file://"))
    if "://" in url:
        scheme = url.split("://", 1)[0]
        raise ConfigError(
            f"store {url!r}: {scheme}:// is not built in; give a directory (or file:///path), "
            "or implement common.filestore.BlobStore for it (docs/msfs.md)"
        )
    return DiskStore(url)
