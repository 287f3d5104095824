"""msfs's pure parts: type claims against first bytes, stored names, the rate limiter."""

from __future__ import annotations

import pytest

from msfs import content
from msfs.content import TypeRefused, normalise, resolve, sniff, stored_name, trim_tail
from msfs.limits import RateLimiter
from tests.msfs import clients

ALLOWED = ("image/jpeg", "image/png", "image/gif", "audio/amr", "application/octet-stream")


@pytest.mark.parametrize(
    ("claimed", "normal"),
    [
        (None, "application/octet-stream"),
        ("", "application/octet-stream"),
        ("image/.jpg", "image/jpeg"),  # the Windows client
        ("image/.PNG", "image/png"),
        ("IMAGE/JPEG; charset=binary", "image/jpeg"),
        ("image/jpg", "image/jpeg"),
        ("application/octet-stream", "application/octet-stream"),
    ],
)
def test_normalise(claimed: str | None, normal: str) -> None:
    assert normalise(claimed) == normal


def test_sniff() -> None:
    assert sniff(clients.jpeg(100)) == "image/jpeg"
    assert sniff(clients.png()) == "image/png"
    assert sniff(b"GIF89a....") == "image/gif"
    assert sniff(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "image/webp"
    assert sniff(b"#!AMR\n\x00") == "audio/amr"
    assert sniff(b"<html>") is None
    assert sniff(b"") is None


def test_resolve() -> None:
    png = clients.png()[:12]
    assert resolve("image/jpeg", png, ALLOWED) == "image/png"  # iOS claims jpeg for PNGs
    assert resolve("application/octet-stream", png, ALLOWED) == "image/png"  # Android
    assert resolve("application/octet-stream", b"plain", ALLOWED) == "application/octet-stream"
    with pytest.raises(TypeRefused) as refused:
        resolve("image/jpeg", b"<svg onload=", ALLOWED)
    assert refused.value.mismatch
    with pytest.raises(TypeRefused) as refused:
        resolve("audio/amr", png, ALLOWED)
    assert refused.value.mismatch
    with pytest.raises(TypeRefused) as refused:
        resolve("text/html", png, ALLOWED)
    assert not refused.value.mismatch
    with pytest.raises(TypeRefused) as refused:  # a picture, but of a type not allowed
        resolve("image/jpeg", b"RIFF\x00\x00\x00\x00WEBP", ALLOWED)
    assert not refused.value.mismatch
    with pytest.raises(TypeRefused):
        resolve("application/octet-stream", b"plain", ("image/jpeg",))


def test_stored_names() -> None:
    name = stored_name("image/png", "image.png_640x480.png")
    token, rest = name.split("_", 1)
    assert len(token) == 32 and rest == "640x480.png"
    assert stored_name("image/jpeg", "IMG_0001.JPG").endswith(".jpg")
    assert "_" not in stored_name("image/jpeg", "IMG_0001.JPG")
    assert stored_name("application/octet-stream", "report.pdf").endswith(".pdf")
    # never an extension that would serve it as what it is not
    assert stored_name("application/octet-stream", "evil.jpg").endswith(".bin")
    assert stored_name("application/octet-stream", "evil.html;x").endswith(".bin")
    assert stored_name("application/octet-stream", None).endswith(".bin")
    assert content.served_type("abc.png") == "image/png"
    assert content.served_type("abc.html") == "application/octet-stream"


def test_trim_tail_drops_only_androids_crlf() -> None:
    assert trim_tail("image/jpeg", b"..\xff\xd9\r\n") == b"..\xff\xd9"
    assert trim_tail("image/png", b"IEND\xaeB`\x82\r\n") == b"IEND\xaeB`\x82"
    assert trim_tail("image/jpeg", b"..\xff\xd9") == b"..\xff\xd9"
    assert trim_tail("image/jpeg", b"..\r\n") == b"..\r\n"  # not after the end marker: kept
    assert trim_tail("application/octet-stream", b"text\r\n") == b"text\r\n"


def test_rate_limiter_is_per_address_and_refills() -> None:
    limiter = RateLimiter(per_minute=3)
    assert [limiter.allow("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("b", 0.0)  # another address has its own bucket
    assert limiter.retry_after("a", 0.0) == pytest.approx(20.0)
    assert not limiter.allow("a", 19.0)
    assert limiter.allow("a", 40.0)
    assert limiter.sweep(40.0) == 1  # b refilled: forgotten
    assert len(limiter) == 1


def test_rate_limiter_table_is_bounded() -> None:
    limiter = RateLimiter(per_minute=1, max_addresses=100)
    for i in range(1000):
        limiter.allow(f"10.0.{i // 256}.{i % 256}", 0.0)
    assert len(limiter) == 100
