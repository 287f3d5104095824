"""Hypothesis strategies for hostile but well-formed protobuf requests.

Values lean on what broke servers before: ids of 0, of the first few rows
and of the type's top; strings at and past their column's length; strings
that are not UTF-8 (protobuf hands those over as bytes, so they go on the
wire by hand).
"""

from __future__ import annotations

from typing import Any

from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor
from hypothesis import strategies as st

from tests.support.ttclient import length_delimited

_TOPS = {
    FieldDescriptor.TYPE_UINT32: 2**32 - 1,
    FieldDescriptor.TYPE_UINT64: 2**64 - 1,
}
# Column sizes (64: names, 255: avatars, tokens...), and one past each.
_LENGTHS = [0, 1, 63, 64, 65, 255, 256, 300, 4000]


def ints(top: int) -> st.SearchStrategy[int]:
    # 1-3: the users and the group the store holds.
    return st.one_of(st.sampled_from([0, 1, 2, 3, top - 1, top]), st.integers(0, top))


def not_utf8() -> st.SearchStrategy[bytes]:
    def invalid(raw: bytes) -> bool:
        try:
            raw.decode()
        except UnicodeDecodeError:
            return True
        return False

    # Among them an encoded surrogate (\xed\xa0\x80), which is no UTF-8 either.
    fixed = st.sampled_from([b"\xff", b"caf\xe9", b"\xed\xa0\x80", b"\xc3", b"a" * 70 + b"\x80"])
    return st.one_of(fixed, st.binary(min_size=1, max_size=12).filter(invalid))


def strings() -> st.SearchStrategy[str | bytes]:
    sized = st.builds(lambda n, c: c * n, st.sampled_from(_LENGTHS), st.sampled_from(["x", "é", "😀"]))
    names = st.sampled_from(["alice", "bob", " alice ", "team"])
    return st.one_of(st.text(max_size=8), sized, names, not_utf8())


def scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    if field.type in _TOPS:
        return ints(_TOPS[field.type])
    if field.type == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=16)
    if field.type == FieldDescriptor.TYPE_STRING:
        return strings()
    if field.type == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        return st.sampled_from([v.number for v in field.enum_type.values])
    if field.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    raise AssertionError(f"no strategy for field {field.full_name}")


@st.composite
def bodies(draw: st.DrawFn, descriptor: Any) -> bytes:  # a Descriptor (the stubs name two kinds)
    """A well-formed body of ``descriptor``'s message: required fields all there."""
    message = message_factory.GetMessageClass(descriptor)()
    raw: list[tuple[int, bytes]] = []
    for field in descriptor.fields:
        if not field.is_required and not field.is_repeated and draw(st.booleans()):
            continue  # an optional field left out
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            count = draw(st.integers(0, 3)) if field.is_repeated else 1
            for _ in range(count):
                raw.append((field.number, draw(bodies(field.message_type))))
        elif field.is_repeated:
            values = draw(st.lists(scalar(field), max_size=4))
            for value in values:
                if isinstance(value, bytes) and field.type == FieldDescriptor.TYPE_STRING:
                    raw.append((field.number, value))
                else:
                    getattr(message, field.name).append(value)
        else:
            value = draw(scalar(field))
            if isinstance(value, bytes) and field.type == FieldDescriptor.TYPE_STRING:
                raw.append((field.number, value))  # protobuf will not set it: on the wire below
            else:
                setattr(message, field.name, value)
    # Partial: a required message or non-UTF-8 string field is still to come.
    body = message.SerializePartialToString()
    return body + b"".join(length_delimited(number, value) for number, value in raw)
