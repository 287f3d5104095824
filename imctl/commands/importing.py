"""``imctl user import FILE.csv``: many users at once, in chunks.

The file is checked here first (header, empty names or passwords,
duplicates within the file), so the rows sent are distinct by name and a
row the server skips can be reported by its line in the file. Chunks of at
most 1,000 rows keep each request well inside its timeout (every password
is hashed on the server). Two chunks are in flight at once, so the
server's hashing threads never idle between a chunk's answer and the next
request; chunks of 200 (about 10 s of scrypt each on two cores) keep every
request far inside its timeout even while logins take the threads first.
Re-running an import after a failure is safe: rows already created are
skipped as taken.
"""

from __future__ import annotations

import csv
import sys
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from imctl.client import EXIT_ERROR, BadUsage, CliError
from imctl.context import admin, admin_options

COLUMNS = ("name", "password", "nick", "department", "email", "tel")
REQUIRED = ("name", "password")
CHUNK = 200  # rows per request by default
MAX_CHUNK = 1000  # the server's limit per request
IN_FLIGHT = 2  # requests at once: the next chunk is hashing while one is answered
IMPORT_TIMEOUT = 180.0  # above the login_server's own 120 s for one chunk
SHOWN_SKIPS = 20  # the rest are counted (all of them are in --json)


@dataclass
class Plan:
    rows: list[dict[str, Any]] = field(default_factory=list)
    lines: dict[str, int] = field(default_factory=dict)  # name -> line in the file
    skipped: list[dict[str, Any]] = field(default_factory=list)  # {line, name, reason}


def read_csv(path: Path) -> Plan:
    """The rows to send and those skipped already; CliError for an unusable file."""
    plan = Plan()
    try:
        # utf-8-sig: spreadsheets put a byte order mark in front of the header.
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = [h.strip().lower() for h in next(reader, [])]
            unknown = [h for h in header if h not in COLUMNS]
            missing = [h for h in REQUIRED if h not in header]
            if unknown or missing or len(set(header)) != len(header):
                raise BadUsage(
                    f"{path}: the header row must name columns from {','.join(COLUMNS)} "
                    f"(name and password required, each once); got {','.join(header) or 'nothing'}"
                )
            for values in reader:
                if not any(v.strip() for v in values):
                    continue  # blank lines, often at the end
                _plan_row(plan, reader.line_num, header, values)
    except OSError as exc:
        raise BadUsage(f"cannot read {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise BadUsage(f"{path} is not a UTF-8 CSV file: {exc}") from None
    return plan


def _plan_row(plan: Plan, line: int, header: list[str], values: list[str]) -> None:
    record = dict(zip(header, values, strict=False))
    name = record.get("name", "").strip()
    reason = ""
    if len(values) > len(header):
        reason = f"{len(values)} fields, the header has {len(header)}"
    elif not name:
        reason = "the name is empty"
    elif not record.get("password"):
        reason = "the password is empty"
    elif name in plan.lines:
        reason = f"the name is also on line {plan.lines[name]}"
    if reason:
        plan.skipped.append({"line": line, "name": name, "reason": reason})
        return
    row: dict[str, Any] = {"name": name, "password": record["password"]}
    for key in ("nick", "email", "tel"):
        if record.get(key, "").strip():
            row[key] = record[key].strip()
    department = record.get("department", "").strip()
    if department:
        row["department"] = int(department) if department.isdecimal() else department
    plan.lines[name] = line
    plan.rows.append(row)


def _line_of(plan: Plan, chunk: list[dict[str, Any]], skip: dict[str, Any]) -> int | None:
    name = skip.get("name")
    if isinstance(name, str) and name in plan.lines:
        return plan.lines[name]
    row = skip.get("row")  # the position in the chunk, if the server did not echo the name
    if isinstance(row, int) and 0 <= row < len(chunk):
        return plan.lines.get(chunk[row]["name"])
    return None


@click.command("import")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--chunk-size",
    default=CHUNK,
    show_default=True,
    type=click.IntRange(1, MAX_CHUNK),
    help="Rows sent per request.",
)
@click.option("--strict", is_flag=True, help="Exit 1 if any row was skipped.")
@admin_options
def user_import(file: Path, chunk_size: int, strict: bool) -> None:
    """Create the users in a CSV file.

    The header row names the columns: name,password (required), nick
    (display name; default: the name), department, email, tel. A department
    is an id, the name of an existing one, or a path from the top such as
    Sales/East (or /Sales for a top-level one): the departments of a path
    that do not exist yet are created. Without one, a user is in the
    top-level department "default". Rows that cannot be created (name
    taken, empty password, unknown department id or name...) are skipped
    and reported by line; the exit code is still 0 unless --strict.
    """
    adm = admin()
    plan = read_csv(file)
    created = 0
    skipped: list[dict[str, Any]] = list(plan.skipped)
    chunks = [plan.rows[start : start + chunk_size] for start in range(0, len(plan.rows), chunk_size)]

    def send(chunk: list[dict[str, Any]]) -> dict[str, Any]:
        return adm.call("POST", "/users/import", {"rows": chunk}, timeout=IMPORT_TIMEOUT)

    failed: tuple[list[dict[str, Any]], CliError] | None = None
    with (
        click.progressbar(length=len(plan.rows), label="importing", file=sys.stderr) as bar,
        ThreadPoolExecutor(IN_FLIGHT, thread_name_prefix="import") as pool,
    ):
        pending: deque[tuple[list[dict[str, Any]], Future[dict[str, Any]]]] = deque()
        queued = iter(chunks)
        # In file order: at most IN_FLIGHT requests out; after a failure, none more is sent.
        while True:
            while failed is None and len(pending) < IN_FLIGHT and (chunk := next(queued, None)) is not None:
                pending.append((chunk, pool.submit(send, chunk)))
            if not pending:
                break
            chunk, future = pending.popleft()
            try:
                result = future.result()
            except CliError as exc:
                failed = failed or (chunk, exc)
                continue
            created += int(result.get("created", 0))
            for skip in result.get("skipped") or []:
                skipped.append(
                    {
                        "line": _line_of(plan, chunk, skip),
                        "name": skip.get("name"),
                        "reason": skip.get("reason", ""),
                    }
                )
            bar.update(len(chunk))
    if failed is not None:
        chunk, error = failed
        first = plan.lines[chunk[0]["name"]]
        # The same class, so the same exit code, and where to resume.
        raise type(error)(
            f"import stopped at line {first}: {error.message} ({created} users created before it; "
            "running the import again skips them)",
            error.status,
        ) from None
    skipped.sort(key=lambda s: s["line"] or 0)
    summary = {"file": str(file), "created": created, "skipped": skipped}

    def human() -> None:
        click.echo(f"{file}: created {created} users, skipped {len(skipped)}")
        for s in skipped[:SHOWN_SKIPS]:
            click.echo(f"  line {s['line'] or '?'} ({s['name'] or 'no name'}): {s['reason']}")
        if len(skipped) > SHOWN_SKIPS:
            click.echo(f"  ... and {len(skipped) - SHOWN_SKIPS} more (--json lists them all)")

    adm.show(summary, human)
    if strict and skipped:
        sys.exit(EXIT_ERROR)
