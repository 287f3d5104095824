"""The encoding TeamTalk clients put message text in.

TeamTalk's clients do not send text as is: they pad it to 16-byte blocks
(the last 4 bytes of the last block hold the text's length, big-endian; a
whole block is added when fewer than 4 bytes would be left), encrypt each
block with AES-256 in ECB mode under a key compiled into every client, and
send the base64 of that. It is obfuscation, not security: the key is public.
The servers treat message bodies as opaque bytes; only text the server itself
writes (the admin API's messages) needs this, so real clients can show it.
"""

from __future__ import annotations

import base64
import binascii
import struct

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

TEAMTALK_KEY = b"12345678901234567890123456789012"
BLOCK = 16


def encode_text(text: str, key: bytes = TEAMTALK_KEY) -> bytes:
    data = text.encode()
    if not data:
        raise ValueError("TeamTalk clients cannot carry an empty text")
    blocks = (len(data) + BLOCK - 1) // BLOCK
    remain = len(data) % BLOCK
    if remain == 0 or remain > BLOCK - 4:
        blocks += 1  # no room left for the length in the last block
    padded = bytearray(blocks * BLOCK)
    padded[: len(data)] = data
    struct.pack_into(">I", padded, len(padded) - 4, len(data))
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return base64.b64encode(encryptor.update(bytes(padded)) + encryptor.finalize())


def decode_text(body: bytes, key: bytes = TEAMTALK_KEY) -> str:
    """The inverse; ValueError for anything a TeamTalk client would not have sent."""
    try:
        raw = base64.b64decode(body, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"not base64: {exc}") from None
    if not raw or len(raw) % BLOCK:
        raise ValueError("not a whole number of AES blocks")
    decryptor = Cipher(algorithms.AES(key), modes.ECB()).decryptor()
    plain = decryptor.update(raw) + decryptor.finalize()
    (length,) = struct.unpack_from(">I", plain, len(plain) - 4)
    if length > len(plain) - 4:
        raise ValueError("length field out of range")
    return plain[:length].decode()
