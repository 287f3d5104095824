"""What every part of the SQL store shares: the engine interface and small SQL helpers.

An engine adapter (:mod:`.sqlite`, :mod:`.mysql`) supplies a :class:`Database`:
transactions, a :class:`Dialect` for the few spellings that differ, and the
translation of its driver's errors into :class:`StoreError`. SQL uses ``?``
placeholders; the MySQL adapter rewrites them to ``%s``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from common.errors import Conflict

from .model import InvalidValue, StoreError, is_text

U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1
I64_MAX = 2**63 - 1  # the largest msg id both engines can compare against
I32 = (-(2**31), 2**31 - 1)
CHUNK = 100  # rows per IN/OR lookup: far below SQLite's bound-variable limit

T = TypeVar("T")
Row = tuple[Any, ...]
Step = tuple[str, Sequence[object]]  # one statement of a script and its parameters
#: Limits of one multi-row statement built by :func:`values_steps`: parameters
#: (SQLite's bound-variable limit is 32766, 999 before 3.32) and bytes of
#: bodies (MySQL's max_allowed_packet is 16 MiB by default; hex doubles them).
MAX_PARAMS = 900
MAX_ROW_BYTES = 1024 * 1024

# Sets ``updated`` to now (the two parameters), or one past its old value when
# that is not older: a change is always seen by a sync that asks for
# "updated > the last value I saw". Put it first in a SET list: MySQL
# evaluates assignments left to right and later ones see earlier results.
BUMP_UPDATED = "updated = CASE WHEN updated < ? THEN ? ELSE updated + 1 END"


@dataclass(frozen=True, slots=True)
class Dialect:
    """The spellings that differ between engines; everything else is shared."""

    name: str
    autoinc_pk: str  # column type of an auto-increment primary key
    blob: str  # a column holding a message body
    table_options: str  # appended to CREATE TABLE
    clustered_options: str  # appended to CREATE TABLE of a table with a composite key
    upsert_clause: str  # "INSERT ... VALUES (...) <this> col = expr"; {keys} is the key
    new_value: str  # the value an upsert tried to insert into {column}
    signed_u64: bool  # integers are signed 64-bit (SQLite)
    # Appended to a SELECT inside a write transaction that must read the
    # latest commit and keep it until this one ends (InnoDB's snapshot reads
    # would not); SQLite's writer holds the database lock already.
    for_update: str

    def upsert(self, keys: str) -> str:
        return self.upsert_clause.format(keys=keys)

    def new(self, column: str) -> str:
        return self.new_value.format(column=column)

    def u64(self, value: int) -> int:
        """An unsigned 64-bit key in the form the engine stores.

        SQLite's INTEGER is signed, so the upper half is stored as its two's
        complement; keys are only ever compared for equality, which survives.
        """
        if self.signed_u64 and value > I64_MAX:
            return value - 2**64
        return value


class Tx(Protocol):
    """Statements inside one transaction (or one read) of an engine."""

    async def execute(self, sql: str, params: Sequence[object] = ()) -> int:
        """Run a statement; returns the number of rows it changed."""
        ...

    async def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None: ...
    async def fetchall(self, sql: str, params: Sequence[object] = ()) -> list[Row]: ...
    async def insert(self, sql: str, params: Sequence[object]) -> int:
        """Run an INSERT; returns the auto-increment id it assigned."""
        ...

    async def script(self, steps: Sequence[Step], *, commit: bool = False) -> list[list[Row]]:
        """Run ``steps`` in order; the rows of each (empty for a write).

        MySQL sends them as one multi-statement query (one round trip per
        ~1 MB of SQL); an error stops the rest (the transaction then rolls
        back whole). ``commit``: the steps end the transaction, COMMIT going
        in the same round trip; nothing may run in it afterwards.
        """
        ...


class Database(Protocol):
    """What an engine adapter provides. Driver errors leave it as StoreError."""

    engine: str
    dialect: Dialect

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    def transaction(self) -> AbstractAsyncContextManager[Tx]:
        """A write transaction: committed when the block ends, rolled back on error."""
        ...

    def reading(self) -> AbstractAsyncContextManager[Tx]:
        """Reads of committed data only; never sees another transaction half-done."""
        ...


class UniqueViolation(Conflict):
    """An insert hit an existing unique key (each caller names what clashed: DuplicateName...)."""


class TransientError(StoreError):
    """The engine gave up on a transaction (deadlock, lock wait); running it again may succeed."""


def marks(n: int) -> str:
    return ", ".join(["?"] * n)


def chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def values_steps(head: str, rows: Sequence[Sequence[object]], tail: str = "") -> list[Step]:
    """``head VALUES (?, ...), (?, ...) tail`` statements, as few as the limits allow.

    One multi-row statement instead of an executemany: the same rows in the
    same order (an upsert's later row sees the earlier ones), one round trip.
    """
    if not rows:
        return []
    width = len(rows[0])
    row_marks = "(" + marks(width) + ")"
    steps: list[Step] = []
    params: list[object] = []
    count = size = 0

    def flush() -> None:
        sql = f"{head} VALUES {', '.join([row_marks] * count)}"
        steps.append((f"{sql} {tail}" if tail else sql, params))

    for row in rows:
        row_size = sum(len(v) for v in row if isinstance(v, bytes))
        if count and ((count + 1) * width > MAX_PARAMS or size + row_size > MAX_ROW_BYTES):
            flush()
            params, count, size = [], 0, 0
        params.extend(row)
        count += 1
        size += row_size
    flush()
    return steps


def valid_ids(ids: Iterable[int]) -> list[int]:
    """The distinct ids that fit an INT UNSIGNED id column, ascending."""
    return sorted({i for i in ids if 0 < i <= U32_MAX})


def check_text(what: str, value: object, limit: int) -> str:
    """``value`` if it is text of at most ``limit`` characters (the column's size)."""
    if not is_text(value):
        raise InvalidValue(f"{what} must be UTF-8 text")
    if len(value) > limit:
        raise InvalidValue(f"{what} is longer than {limit} characters")
    return value


def check_int(what: str, value: object, low: int, high: int) -> int:
    if type(value) is not int:
        raise InvalidValue(f"{what} must be an int, not {type(value).__name__}")
    if not low <= value <= high:
        raise InvalidValue(f"{what} {value} is out of range")
    return value
