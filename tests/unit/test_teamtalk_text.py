"""TeamTalk's message-text encoding, checked against vectors made with openssl.

The vectors: the padded plaintext (text, zeros, length in the last 4 bytes)
through ``openssl enc -aes-256-ecb -nopad -K <hex of the key>``, base64.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.teamtalk_text import decode_text, encode_text


@pytest.mark.parametrize(
    ("text", "encoded"),
    [
        ("hi", b"isFbgVCILeNPXzVe+MncXQ=="),
        ("a" * 12, b"fkZkMSRqpjkLYLwLy+JzGQ=="),  # 12 bytes: the length still fits the block
        ("a" * 13, b"5gvHngFWDUEYuYHDAALgjwr+GZ43+2mMfQMFqTsGBjY="),  # 13: a block more
        ("a" * 16, b"GhzJPJvYkGFWe0+vbsUYigfU6OB7fpsvZh6GP3dYB9g="),
        ("中文消息", b"tfZiWz8h3gqFJp0+WXDHaQ=="),
    ],
)
def test_known_vectors(text: str, encoded: bytes) -> None:
    assert encode_text(text) == encoded
    assert decode_text(encoded) == text


@given(st.text(min_size=1, max_size=300))
def test_round_trip(text: str) -> None:
    assert decode_text(encode_text(text)) == text


@pytest.mark.parametrize("body", [b"", b"not base64!", b"YWJj"])
def test_garbage_is_a_value_error(body: bytes) -> None:
    with pytest.raises(ValueError):
        decode_text(body)
