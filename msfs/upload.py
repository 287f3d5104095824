"""One upload: the multipart body streamed, checked and written to the store.

The body is never held whole: each part is read with ``read_chunk`` and
written to a :class:`BlobWriter` chunk by chunk (aiohttp pauses the socket
while we write, so memory stays at a few chunks whatever the size). Every
refusal aborts the writer, so nothing of a refused upload is left behind.

TeamTalk clients send one file part (named ``file0`` by Android, ``image``
by the others) and possibly small form fields before it (iOS and macOS send
``type=im_image``): fields are read and dropped, within bounds; the first
part with a ``filename`` is the upload; anything after it is not read.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import BodyPartReader, MultipartReader
from aiohttp.http_exceptions import BadHttpMessage

from common.filestore import BlobStore, BlobWriter, StoreError
from msfs import content
from msfs.refusals import EMPTY, MALFORMED, NO_FILE, STORE_FAILED, TOO_LARGE, TYPE_MISMATCH, TYPE_NOT_ALLOWED
from msfs.refusals import UploadRefused as Refused

CHUNK = 64 * 1024
MAX_FIELDS = 8  # form fields before the file part
MAX_FIELD_BYTES = 4096  # all of them together
NAMESPACE = "msfs"

# What a multipart body may hold besides the file (boundaries, part headers,
# fields): the Content-Length check up front allows this much over the limit.
OVERHEAD = 16 * 1024


@dataclass(frozen=True, slots=True)
class Stored:
    name: str  # the blob is NAMESPACE/name
    kind: str
    size: int


@dataclass(frozen=True, slots=True)
class Limits:
    max_size: int
    allowed_types: tuple[str, ...]


# aiohttp's multipart reader says "malformed" with these.
PARSE_ERRORS = (ValueError, AssertionError, LookupError, BadHttpMessage)


async def receive(reader: MultipartReader, store: BlobStore, limits: Limits) -> Stored:
    """Store the file part of ``reader``'s body; :class:`UploadRefused` if it will not be."""
    part = await _file_part(reader)
    try:
        return await _store_part(part, store, limits)
    except PARSE_ERRORS as exc:
        raise Refused(MALFORMED, f"malformed multipart body: {exc}") from exc


async def _file_part(reader: MultipartReader) -> BodyPartReader:
    fields = field_bytes = 0
    while True:
        try:
            part = await reader.next()
        except PARSE_ERRORS as exc:
            raise Refused(MALFORMED, f"malformed multipart body: {exc}") from exc
        if part is None:
            raise Refused(NO_FILE, "no file part (a form-data part with a filename) in the body")
        if not isinstance(part, BodyPartReader):
            raise Refused(MALFORMED, "nested multipart bodies are not accepted")
        if part.filename is not None:
            return part
        fields += 1
        if fields > MAX_FIELDS:
            raise Refused(MALFORMED, f"more than {MAX_FIELDS} form fields before the file part")
        try:
            while chunk := await part.read_chunk(CHUNK):
                field_bytes += len(chunk)
                if field_bytes > MAX_FIELD_BYTES:
                    raise Refused(MALFORMED, f"form fields over {MAX_FIELD_BYTES} bytes before the file part")
            _check_ended(part)
        except PARSE_ERRORS as exc:
            raise Refused(MALFORMED, f"malformed multipart body: {exc}") from exc


async def _store_part(part: BodyPartReader, store: BlobStore, limits: Limits) -> Stored:
    claimed = content.normalise(part.headers.get("Content-Type"))
    if not content.claim_allowed(claimed, limits.allowed_types):  # refused before reading a byte of it
        raise Refused(TYPE_NOT_ALLOWED, f"content type {claimed} is not accepted here")
    head = b""
    while len(head) < content.SNIFF_BYTES:
        chunk = await part.read_chunk(CHUNK)
        if not chunk:
            _check_ended(part)
            break
        head += chunk
    if not head:
        raise Refused(EMPTY, "the file part is empty")
    try:
        kind = content.resolve(claimed, head[: content.SNIFF_BYTES], limits.allowed_types)
    except content.TypeRefused as exc:
        raise Refused(TYPE_MISMATCH if exc.mismatch else TYPE_NOT_ALLOWED, exc.message) from exc
    name = content.stored_name(kind, part.filename)
    try:
        writer = await store.create(f"{NAMESPACE}/{name}")
    except StoreError as exc:
        raise Refused(STORE_FAILED, f"the store failed: {exc.message}") from exc
    try:
        size = await _stream(part, head, writer, kind, limits.max_size)
        await writer.commit()
    except StoreError as exc:
        await writer.abort()
        raise Refused(STORE_FAILED, f"the store failed: {exc.message}") from exc
    except BaseException:  # refused, malformed, the client went away, or cancelled
        await writer.abort()
        raise
    return Stored(name, kind, size)


async def _stream(part: BodyPartReader, head: bytes, writer: BlobWriter, kind: str, max_size: int) -> int:
    """Copy the part to ``writer``; the size stored."""
    received = len(head)
    pending = head  # its last TAIL_BYTES are held back until the end is known
    while True:
        if received > max_size + 2:  # + the CRLF Android adds, trimmed below
            raise Refused(TOO_LARGE, f"the file is larger than {max_size} bytes")
        if len(pending) > content.TAIL_BYTES:
            cut = len(pending) - content.TAIL_BYTES
            await writer.write(pending[:cut])
            pending = pending[cut:]
        chunk = await part.read_chunk(CHUNK)
        if not chunk:
            _check_ended(part)
            break
        received += len(chunk)
        pending += chunk
    tail = content.trim_tail(kind, pending)
    size = received - (len(pending) - len(tail))
    if size > max_size:
        raise Refused(TOO_LARGE, f"the file is larger than {max_size} bytes")
    await writer.write(tail)
    return size


def _check_ended(part: BodyPartReader) -> None:
    """A part that ran out of bytes must have ended at a boundary, not with the body."""
    if not part.at_eof():
        raise Refused(MALFORMED, "the body ended inside a part (no closing boundary)")
