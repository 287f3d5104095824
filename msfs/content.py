"""What an upload is: its claimed type checked against its first bytes, and its stored name.

Pure functions, no I/O. TeamTalk clients claim types loosely: Android sends
every picture as ``application/octet-stream``, iOS and macOS claim
``image/jpeg`` for PNGs too, and the Windows client sends ``image/.jpg``
(the file's extension, dot included). So a claim is normalised, an image
claim only requires the bytes to be *an* allowed image, and the type stored
(and served back) is the one the bytes show, never the one claimed.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable

from common.errors import InvalidArgument

OCTET_STREAM = "application/octet-stream"
SNIFF_BYTES = 12  # the longest signature below (WebP: RIFF....WEBP)

# type -> extension stored (and served back by); the types with a signature.
EXTENSIONS = {
    "image/jpeg": "jpg",
    "image/png": "png",
    "image/gif": "gif",
    "image/bmp": "bmp",
    "image/webp": "webp",
    "audio/amr": "amr",
}
TYPE_OF_EXTENSION = {ext: kind for kind, ext in EXTENSIONS.items()}

# The bytes a well-formed file of the type always ends with. Android's
# uploader (MoGuHttpClient.uploadImage3) writes "\r\n" after the picture and
# then "\r\n--boundary--", so a multipart parser counts one CRLF too many as
# content; TeamTalk's msfs stored it too. A file of these types never ends in
# CRLF after its end marker, so that CRLF is dropped (see :func:`trim_tail`).
TRAILERS = {
    "image/jpeg": b"\xff\xd9",
    "image/png": b"IEND\xaeB`\x82",
    "image/gif": b";",
}
TAIL_BYTES = max(len(t) for t in TRAILERS.values()) + 2  # held back until the end of the upload

_ALIASES = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg", "image/x-ms-bmp": "image/bmp"}
_SAFE_EXTENSION = re.compile(r"[a-z0-9]{1,8}")
# TeamTalk's clients name a picture "<name>_<width>x<height>.<ext>"; msfs
# keeps the size in the stored name, as TeamTalk's does.
_SIZE_SUFFIX = re.compile(r"_(\d{1,4})x(\d{1,4})\.[^._]*$")


def normalise(claimed: str | None) -> str:
    """The media type a part header claims, lower case, parameters dropped; none: octet-stream."""
    if not claimed:
        return OCTET_STREAM  # RFC 7578: a file part without a type is octet-stream
    kind = claimed.split(";", 1)[0].strip().lower()
    major, _, minor = kind.partition("/")
    minor = minor.lstrip(".")  # Windows client: "image/.jpg"
    kind = f"{major}/{minor}"
    return _ALIASES.get(kind, kind)


def sniff(head: bytes) -> str | None:
    """The type the first bytes show, or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "image/webp"
    if head.startswith(b"BM"):
        return "image/bmp"
    if head.startswith(b"#!AMR\n"):
        return "audio/amr"
    return None


class TypeRefused(InvalidArgument):
    """A part whose type is not accepted (``mismatch``: its bytes contradict its claim)."""

    def __init__(self, mismatch: bool, message: str) -> None:
        super().__init__(message)
        self.mismatch = mismatch


def claim_allowed(claimed: str, allowed: Iterable[str]) -> bool:
    """Whether to read a part claiming ``claimed`` at all.

    octet-stream claims nothing (Android sends every picture so): its bytes
    decide, even when octet-stream itself is not allowed.
    """
    return claimed == OCTET_STREAM or claimed in allowed


def resolve(claimed: str, head: bytes, allowed: Iterable[str]) -> str:
    """The type to store an upload as, from its normalised claim and first bytes.

    Raises :class:`TypeRefused`: ``mismatch`` when the bytes contradict the
    claim, else the type is not allowed.
    """
    allowed = set(allowed)
    if not claim_allowed(claimed, allowed):
        raise TypeRefused(False, f"content type {claimed} is not accepted here")
    shown = sniff(head)
    if claimed.startswith("image/") and (shown is None or not shown.startswith("image/")):
        raise TypeRefused(True, f"the bytes are not a picture (claimed {claimed})")
    if claimed in EXTENSIONS and not claimed.startswith("image/") and shown != claimed:
        raise TypeRefused(True, f"the bytes are not {claimed}")
    effective = shown or claimed
    if effective not in allowed:
        raise TypeRefused(False, f"content type {effective} is not accepted here")
    return effective


def stored_name(kind: str, filename: str | None) -> str:
    """A fresh unguessable name: 128 random bits, TeamTalk's size suffix, an extension we chose."""
    token = secrets.token_hex(16)
    name = filename or ""
    size = _SIZE_SUFFIX.search(name)
    suffix = f"_{int(size[1])}x{int(size[2])}" if size else ""
    return f"{token}{suffix}.{extension(kind, name)}"


def extension(kind: str, filename: str) -> str:
    if kind in EXTENSIONS:
        return EXTENSIONS[kind]
    # Anything else keeps a harmless extension of its own, never one that
    # would make it served as a picture or sound it is not.
    ext = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    if _SAFE_EXTENSION.fullmatch(ext) and ext not in TYPE_OF_EXTENSION and ext != "jpeg":
        return ext
    return "bin"


def served_type(name: str) -> str:
    """The Content-Type a stored name is served with (what its extension says, else octet-stream)."""
    ext = name.rsplit(".", 1)[-1] if "." in name else ""
    return TYPE_OF_EXTENSION.get(ext, OCTET_STREAM)


def trim_tail(kind: str, tail: bytes) -> bytes:
    """``tail`` (the last bytes of an upload) without the stray CRLF Android appends."""
    trailer = TRAILERS.get(kind)
    if trailer is not None and tail.endswith(trailer + b"\r\n"):
        return tail[:-2]
    return tail
