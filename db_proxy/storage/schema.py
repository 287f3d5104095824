"""The one schema both engines share, as an ordered list of migrations.

Column types are written once in a subset both MySQL/MariaDB and SQLite accept;
only the few spellings that cannot be shared (auto-increment key, blob type,
table options) come from the engine's :class:`~db_proxy.storage.sql_base.Dialect`.

Every step is idempotent (``IF NOT EXISTS``, or :class:`AddColumn`, which
looks before it alters) because MySQL commits DDL implicitly: a migration
interrupted half-way is simply run again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .model import StoreError

if TYPE_CHECKING:
    from .sql_base import Database, Dialect, Tx

# Maximum length (characters) of each user text column: the DDL and the
# validation in create_user both read it, so MySQL (which rejects longer
# values in strict mode) and SQLite (which would store them) behave the same.
USER_TEXT_LIMITS: dict[str, int] = {
    "name": 64,
    "password_hash": 255,
    "nick": 64,
    "avatar": 255,
    "email": 128,
    "real_name": 64,
    "tel": 32,
    "domain": 64,
    "sign_info": 255,
}
# The same for the other tables' text columns (migration 1 spells them out).
GROUP_TEXT_LIMITS: dict[str, int] = {"name": 64, "avatar": 255}
DEPARTMENT_NAME_LIMIT = 64
# The top-level department a user without one is in (TeamTalk's clients
# group contacts by department and expect every user to have a listed one).
# Found by this name at the top (parent 0); migration 4 spells it too, so it
# never changes.
DEFAULT_DEPARTMENT = "default"
DEVICE_TOKEN_LIMIT = 255
# offline_files (migration 5): a task key is 32 hex digits, a ticket 57 characters.
OFFLINE_FILE_NAME_LIMIT = 255
TASK_KEY_LEN = 32
TICKET_LIMIT = 64
# admin_audit (migration 6): who and how are short names, detail is JSON.
AUDIT_TEXT_LIMITS: dict[str, int] = {"who": 64, "via": 16, "remote": 64, "action": 128, "target": 255}
AUDIT_DETAIL_LIMIT = 4000
EXTERNAL_ID_LIMIT = 255
# users.kind (migration 6): a person, or the sender of admin notices, which
# no directory list or search shows.
USER_KIND_PERSON = 0
USER_KIND_SYSTEM = 1


@dataclass(frozen=True, slots=True)
class AddColumn:
    """A migration step: add a column unless it is there already.

    Neither MySQL 8 nor SQLite has ``ADD COLUMN IF NOT EXISTS`` (MariaDB
    has), so :func:`migrate` looks first. ``definition`` needs a DEFAULT:
    existing rows get it.
    """

    table: str
    column: str
    definition: str


Step = str | AddColumn


def _table(d: Dialect, name: str, body: str, key: str, *indexes: tuple[str, str]) -> list[str]:
    """CREATE TABLE plus its secondary indexes, in the engine's spelling.

    ``key`` is the primary key column list, or "" when a column is the
    auto-increment key. MySQL declares indexes inside the table (so the one
    IF NOT EXISTS covers them); SQLite has no inline index syntax.
    """
    parts = [body.strip()]
    if key:
        parts.append(f"PRIMARY KEY ({key})")
    if d.name == "mysql":
        parts += [f"KEY {index} ({columns})" for index, columns in indexes]
    columns_sql = ",\n  ".join(parts)
    # Composite keys get SQLite's WITHOUT ROWID: the table is then clustered
    # on its key like InnoDB, instead of a rowid table plus a key index.
    options = d.clustered_options if key else d.table_options
    statements = [f"CREATE TABLE IF NOT EXISTS {name} (\n  {columns_sql}\n){options}"]
    if d.name != "mysql":
        statements += [
            f"CREATE INDEX IF NOT EXISTS {index} ON {name} ({columns})" for index, columns in indexes
        ]
    return statements


def _user_text(column: str) -> str:
    return f"{column} VARCHAR({USER_TEXT_LIMITS[column]}) NOT NULL DEFAULT ''"


def _initial(d: Dialect) -> list[str]:
    user_texts = ",\n  ".join(
        _user_text(c) for c in ("nick", "avatar", "email", "real_name", "tel", "domain")
    )
    return [
        *_table(
            d,
            "users",
            f"""
  id {d.autoinc_pk},
  {_user_text("name")},
  {_user_text("password_hash")},
  {user_texts},
  gender INT NOT NULL DEFAULT 0,
  department_id INT UNSIGNED NOT NULL DEFAULT 0,
  status INT NOT NULL DEFAULT 0,
  {_user_text("sign_info")},
  disabled TINYINT NOT NULL DEFAULT 0,
  created BIGINT NOT NULL DEFAULT 0,
  updated BIGINT NOT NULL DEFAULT 0,
  CONSTRAINT uq_users_name UNIQUE (name)""",
            "",
            ("idx_users_updated", "updated"),
        ),
        *_table(
            d,
            "departments",
            f"""
  id {d.autoinc_pk},
  name VARCHAR(64) NOT NULL,
  parent_id INT UNSIGNED NOT NULL DEFAULT 0,
  priority INT NOT NULL DEFAULT 0,
  deleted TINYINT NOT NULL DEFAULT 0,
  updated BIGINT NOT NULL DEFAULT 0,
  CONSTRAINT uq_departments_name UNIQUE (parent_id, name)""",
            "",
            ("idx_departments_updated", "updated"),
        ),
        # "groups" is a reserved word in MySQL 8.
        *_table(
            d,
            "chat_groups",
            f"""
  id {d.autoinc_pk},
  name VARCHAR(64) NOT NULL,
  avatar VARCHAR(255) NOT NULL DEFAULT '',
  creator_id INT UNSIGNED NOT NULL,
  group_type TINYINT UNSIGNED NOT NULL DEFAULT 1,
  version INT UNSIGNED NOT NULL DEFAULT 1,
  dismissed TINYINT NOT NULL DEFAULT 0,
  created BIGINT NOT NULL DEFAULT 0,
  updated BIGINT NOT NULL DEFAULT 0""",
            "",
            ("idx_chat_groups_updated", "updated"),
        ),
        *_table(
            d,
            "group_members",
            """
  group_id INT UNSIGNED NOT NULL,
  user_id INT UNSIGNED NOT NULL,
  joined_msg_id BIGINT UNSIGNED NOT NULL DEFAULT 0,
  removed TINYINT NOT NULL DEFAULT 0,
  updated BIGINT NOT NULL DEFAULT 0""",
            "group_id, user_id",
            ("idx_group_members_user", "user_id"),
        ),
        # The durable msg id counter of each conversation; conv_id is the
        # packed user pair for 1:1 and the group id for groups.
        *_table(
            d,
            "conversations",
            """
  session_type TINYINT UNSIGNED NOT NULL,
  conv_id BIGINT UNSIGNED NOT NULL,
  last_msg_id BIGINT UNSIGNED NOT NULL""",
            "session_type, conv_id",
        ),
        *_table(
            d,
            "messages",
            f"""
  session_type TINYINT UNSIGNED NOT NULL,
  conv_id BIGINT UNSIGNED NOT NULL,
  msg_id BIGINT UNSIGNED NOT NULL,
  from_user_id INT UNSIGNED NOT NULL,
  to_id INT UNSIGNED NOT NULL,
  msg_type INT UNSIGNED NOT NULL,
  msg_data {d.blob} NOT NULL,
  create_time BIGINT NOT NULL""",
            "session_type, conv_id, msg_id",
        ),
        # created is the original message's create_time: a duplicate's ack
        # repeats it, and old rows can be pruned by it.
        *_table(
            d,
            "message_dedup",
            """
  from_user_id INT UNSIGNED NOT NULL,
  session_type TINYINT UNSIGNED NOT NULL,
  to_id INT UNSIGNED NOT NULL,
  client_msg_id BIGINT UNSIGNED NOT NULL,
  body_hash BIGINT UNSIGNED NOT NULL,
  msg_id BIGINT UNSIGNED NOT NULL,
  created BIGINT NOT NULL""",
            "from_user_id, session_type, to_id, client_msg_id, body_hash",
            ("idx_message_dedup_created", "created"),
        ),
        # conv_id is derivable from the key but stored so that joining a
        # session to its latest message needs no engine-specific arithmetic.
        *_table(
            d,
            "sessions",
            """
  user_id INT UNSIGNED NOT NULL,
  session_type TINYINT UNSIGNED NOT NULL,
  peer_id INT UNSIGNED NOT NULL,
  conv_id BIGINT UNSIGNED NOT NULL,
  updated BIGINT NOT NULL,
  latest_msg_id BIGINT UNSIGNED NOT NULL,
  unread_cnt INT UNSIGNED NOT NULL DEFAULT 0,
  removed TINYINT NOT NULL DEFAULT 0""",
            "user_id, session_type, peer_id",
            ("idx_sessions_updated", "user_id, updated"),
        ),
    ]


def _groups_and_devices(d: Dialect) -> list[Step]:
    return [
        # The member's own mute of the group (TeamTalk's shield_status).
        AddColumn("group_members", "shield", "TINYINT NOT NULL DEFAULT 0"),
        # One push token per user and client type (TeamTalk's client_type).
        *_table(
            d,
            "devices",
            f"""
  user_id INT UNSIGNED NOT NULL,
  client_type INT UNSIGNED NOT NULL,
  token VARCHAR({DEVICE_TOKEN_LIMIT}) NOT NULL DEFAULT '',
  updated BIGINT NOT NULL DEFAULT 0""",
            "user_id, client_type",
        ),
        # Per-user settings without a place in the profile; no row: defaults.
        *_table(
            d,
            "push_settings",
            """
  user_id INT UNSIGNED NOT NULL,
  shield TINYINT NOT NULL DEFAULT 0,
  updated BIGINT NOT NULL DEFAULT 0""",
            "user_id",
        ),
    ]


def _deleted_users(d: Dialect) -> list[Step]:
    # A deleted user stays (old messages name it), disabled, out of admin lists.
    return [AddColumn("users", "deleted", "TINYINT NOT NULL DEFAULT 0")]


def _default_department(d: Dialect) -> list[Step]:
    """Every user in a department that exists: the default one for those
    in department 0 or in a deleted or missing one.

    Plain SQL (the same for scripts/schema-mysql.sql); ``updated`` becomes
    now so that clients that synced before see the change. Empty search
    keys (``domain``) are filled by code after the migrations
    (:meth:`SqlStore.migrate`): pinyin is not SQL.
    """
    now = "UNIX_TIMESTAMP()" if d.name == "mysql" else "CAST(strftime('%s', 'now') AS INTEGER)"
    live_default = f"parent_id = 0 AND name = '{DEFAULT_DEPARTMENT}' AND deleted = 0"
    return [
        # FROM a one-row derived table: both engines take it (SQLite has no DUAL).
        "INSERT INTO departments (name, parent_id, priority, deleted, updated) "
        f"SELECT '{DEFAULT_DEPARTMENT}', 0, 0, 0, {now} FROM (SELECT 1 AS one) AS seed "
        f"WHERE NOT EXISTS (SELECT 1 FROM departments WHERE {live_default})",
        "UPDATE users SET "
        f"updated = CASE WHEN updated < {now} THEN {now} ELSE updated + 1 END, "
        f"department_id = (SELECT MIN(id) FROM departments WHERE {live_default}) "
        "WHERE department_id NOT IN (SELECT id FROM departments WHERE deleted = 0)",
    ]


def _offline_files(d: Dialect) -> list[str]:
    # An uploaded offline file, listed for its receiver until it takes it
    # (IMFileDelOfflineReq) or it expires; the data is on the file server,
    # under the task key. receiver_task_id is the receiver's download ticket.
    return _table(
        d,
        "offline_files",
        f"""
  id {d.autoinc_pk},
  from_user_id INT UNSIGNED NOT NULL,
  to_user_id INT UNSIGNED NOT NULL,
  task_key CHAR({TASK_KEY_LEN}) NOT NULL,
  receiver_task_id VARCHAR({TICKET_LIMIT}) NOT NULL,
  file_name VARCHAR({OFFLINE_FILE_NAME_LIMIT}) NOT NULL,
  file_size BIGINT NOT NULL,
  created BIGINT NOT NULL,
  expires_at BIGINT NOT NULL,
  CONSTRAINT uq_offline_files_task UNIQUE (task_key)""",
        "",
        ("idx_offline_files_to", "to_user_id, expires_at"),
        ("idx_offline_files_expires", "expires_at"),
    )


def _admin_day_one(d: Dialect) -> list[Step]:
    """The audit trail of admin actions, user kinds and directory ids, and
    the index that retention and time-range export walk."""
    return [
        *_table(
            d,
            "admin_audit",
            f"""
  id {d.autoinc_pk},
  at_ms BIGINT NOT NULL,
  who VARCHAR({AUDIT_TEXT_LIMITS["who"]}) NOT NULL,
  via VARCHAR({AUDIT_TEXT_LIMITS["via"]}) NOT NULL,
  remote VARCHAR({AUDIT_TEXT_LIMITS["remote"]}) NOT NULL DEFAULT '',
  action VARCHAR({AUDIT_TEXT_LIMITS["action"]}) NOT NULL,
  target VARCHAR({AUDIT_TEXT_LIMITS["target"]}) NOT NULL DEFAULT '',
  status INT NOT NULL DEFAULT 0,
  detail TEXT NOT NULL""",
            "",
            ("idx_admin_audit_at", "at_ms"),
            ("idx_admin_audit_who", "who, id"),
        ),
        AddColumn("users", "kind", f"TINYINT NOT NULL DEFAULT {USER_KIND_PERSON}"),
        # The user's id in the company directory (LDAP entryUUID, AD objectGUID):
        # empty for users made here.
        AddColumn("users", "external_id", f"VARCHAR({EXTERNAL_ID_LIMIT}) NOT NULL DEFAULT ''"),
        "CREATE INDEX IF NOT EXISTS idx_users_external_id ON users (external_id)",
        "CREATE INDEX IF NOT EXISTS idx_messages_type_time ON messages (session_type, create_time)",
    ]


# (version, description, steps for a dialect). Append only: a released
# migration never changes, a new one gets the next version.
Migration = tuple[int, str, Callable[["Dialect"], Sequence[Step]]]
MIGRATIONS: Sequence[Migration] = (
    (1, "initial schema", _initial),
    (2, "group shield, device tokens, push settings", _groups_and_devices),
    (3, "deleted users", _deleted_users),
    (4, "default department", _default_department),
    (5, "offline files", _offline_files),
    (6, "admin audit, user kinds and directory ids, messages by time", _admin_day_one),
)
LATEST_VERSION = MIGRATIONS[-1][0]


async def migrate(db: Database, upto: int = LATEST_VERSION) -> int:
    """Apply the migrations not yet recorded, up to ``upto`` (a restore loads an
    older backup into its own version before the rest); returns the version now in place."""
    d = db.dialect
    async with db.transaction() as tx:
        for statement in _table(
            d,
            "schema_version",
            """
  version INT NOT NULL,
  description VARCHAR(200) NOT NULL,
  applied BIGINT NOT NULL""",
            "version",
        ):
            await tx.execute(statement)
    async with db.transaction() as tx:
        current = await _current_version(tx)
        if current > LATEST_VERSION:
            raise StoreError(
                f"the database has schema version {current}, newer than this code's "
                f"{LATEST_VERSION}; upgrade imcluster"
            )
        for version, description, steps in MIGRATIONS:
            if version <= current or version > upto:
                continue
            for step in steps(d):
                await _run(tx, d, step)
            # Another process may have applied the same migration meanwhile
            # (all steps are idempotent); recording it twice is no error.
            await tx.execute(
                "INSERT INTO schema_version (version, description, applied) VALUES (?, ?, ?) "
                f"{d.upsert('version')} version = version",
                (version, description, int(time.time())),
            )
        return max(current, min(upto, LATEST_VERSION))


async def _current_version(tx: Tx) -> int:
    rows = await tx.fetchall("SELECT MAX(version) FROM schema_version")
    return int(rows[0][0] or 0)


async def _run(tx: Tx, d: Dialect, step: Step) -> None:
    if isinstance(step, str):
        await tx.execute(step)
    elif step.column not in await _columns(tx, d, step.table):
        await tx.execute(f"ALTER TABLE {step.table} ADD COLUMN {step.column} {step.definition}")


async def _columns(tx: Tx, d: Dialect, table: str) -> set[str]:
    if d.name == "mysql":
        sql = (
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = DATABASE() AND table_name = ?"
        )
    else:
        sql = "SELECT name FROM pragma_table_info(?)"
    return {str(row[0]).lower() for row in await tx.fetchall(sql, (table,))}
