"""Password hashing: scrypt over the md5 hex that TeamTalk clients send.

The stored form names its parameters, so they can be raised later without
invalidating old hashes: ``scrypt$<log2 n>$<r>$<p>$<salt b64>$<hash b64>``.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os

LOG2_N = 14
R = 8
P = 1
_MAXMEM = 64 << 20


def md5_hex(plain: str) -> str:
    """What a TeamTalk client sends for a plain password."""
    return hashlib.md5(plain.encode()).hexdigest()


def _scrypt(secret: str, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(secret.encode(), salt=salt, n=1 << log2_n, r=r, p=p, maxmem=_MAXMEM, dklen=32)


def hash_password(md5: str, log2_n: int = LOG2_N) -> str:
    """Hash a client's md5 hex. ``log2_n`` below the default is for load tests only."""
    salt = os.urandom(16)
    digest = _scrypt(md5.lower(), salt, log2_n, R, P)
    b64 = base64.b64encode
    return f"scrypt${log2_n}${R}${P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(md5: str, stored: str) -> bool:
    try:
        scheme, log2_n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = _scrypt(md5.lower(), base64.b64decode(salt), int(log2_n), int(r), int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(expected, actual)


@functools.cache
def dummy_hash() -> str:
    """A hash of a random password at the default cost, made once.

    A login for a user that does not exist (or cannot log in) is checked
    against it, so its refusal costs the same scrypt as a wrong password for
    one that does: the time of the answer does not tell which names exist.
    """
    return hash_password(os.urandom(16).hex())


def verify_or_waste(md5: str, stored: str | None) -> bool:
    """``verify_password``, or the same work against :func:`dummy_hash` when ``stored`` is None."""
    if stored is None:
        verify_password(md5, dummy_hash())
        return False
    return verify_password(md5, stored)
