"""The roles a db_proxy may serve, and which role each request belongs to.

A db_proxy serves the roles its config names (``db_proxy.roles``); gateways,
login_server and imctl learn them when a link is made (``DB_PROXY_INFO``)
and send each request to a db_proxy serving its role, failing over between
those. One process may serve all of them (the embedded default).

* ``login``: login validation, the verified-password cache, the failed-login
  throttle. The most frequent work (users open their apps all day), kept
  apart so a burst of messages cannot slow it, and the reverse.
* ``directory``: users, departments, device tokens and push shield, offline
  files.
* ``messages``: saving messages, unread counts, history, read acks, the
  recent-session list and groups (membership decides a message's recipients
  and what history a member sees, at the message's commit, so groups are
  stored with messages); the delivery log's push and the offline push.
* ``admin``: the admin API's methods (users, departments, groups, sends).

Where the data lives (``db_proxy.directory_database_url`` and
``db_proxy.messages_database_url``): users, departments, device tokens and
offline files in the directory database; messages, conversations, sessions,
groups and their members in the messages database. The message path reads
what it needs from the directory (does a user exist) through a bounded
cache, never by a cross-database join.
"""

from __future__ import annotations

from enum import StrEnum

from common.commands import Cmd


class DbRole(StrEnum):
    LOGIN = "login"
    DIRECTORY = "directory"
    MESSAGES = "messages"
    ADMIN = "admin"


ALL_ROLES: tuple[DbRole, ...] = tuple(DbRole)

#: The role of every request a db_proxy answers, by its command id.
ROLE_OF: dict[int, DbRole] = {
    Cmd.DB_LOGIN_REQ: DbRole.LOGIN,
    # directory
    Cmd.USERS_INFO_REQ: DbRole.DIRECTORY,
    Cmd.ALL_USER_REQ: DbRole.DIRECTORY,
    Cmd.DEPARTMENT_REQ: DbRole.DIRECTORY,
    Cmd.CHANGE_AVATAR_REQ: DbRole.DIRECTORY,
    Cmd.CHANGE_SIGN_INFO_REQ: DbRole.DIRECTORY,
    Cmd.DB_CHANGE_AVATAR_REQ: DbRole.DIRECTORY,
    Cmd.DB_CHANGE_SIGN_INFO_REQ: DbRole.DIRECTORY,
    Cmd.DEVICE_TOKEN_REQ: DbRole.DIRECTORY,
    Cmd.PUSH_SHIELD_REQ: DbRole.DIRECTORY,
    Cmd.QUERY_PUSH_SHIELD_REQ: DbRole.DIRECTORY,
    Cmd.FILE_HAS_OFFLINE_REQ: DbRole.DIRECTORY,
    Cmd.DB_OFFLINE_FILE_ADD: DbRole.DIRECTORY,
    Cmd.DB_OFFLINE_FILE_DEL_REQ: DbRole.DIRECTORY,
    # messages, sessions and groups
    Cmd.DB_SAVE_MSG_REQ: DbRole.MESSAGES,
    Cmd.DB_SAVE_MSGS_REQ: DbRole.MESSAGES,
    Cmd.UNREAD_CNT_REQ: DbRole.MESSAGES,
    Cmd.MSG_LIST_REQ: DbRole.MESSAGES,
    Cmd.MSG_READ_ACK: DbRole.MESSAGES,
    Cmd.LATEST_MSG_ID_REQ: DbRole.MESSAGES,
    Cmd.MSG_BY_ID_REQ: DbRole.MESSAGES,
    Cmd.RECENT_SESSION_REQ: DbRole.MESSAGES,
    Cmd.REMOVE_SESSION_REQ: DbRole.MESSAGES,
    Cmd.NORMAL_GROUP_LIST_REQ: DbRole.MESSAGES,
    Cmd.GROUP_INFO_REQ: DbRole.MESSAGES,
    Cmd.GROUP_CREATE_REQ: DbRole.MESSAGES,
    Cmd.GROUP_CHANGE_MEMBER_REQ: DbRole.MESSAGES,
    Cmd.DB_GROUP_CREATE_REQ: DbRole.MESSAGES,
    Cmd.DB_GROUP_CHANGE_MEMBER_REQ: DbRole.MESSAGES,
    Cmd.GROUP_SHIELD_REQ: DbRole.MESSAGES,
    # administration
    Cmd.ADMIN_CALL: DbRole.ADMIN,
}


def role_of(command_id: int) -> DbRole:
    """The role serving a request; KeyError for a command no db_proxy answers."""
    return ROLE_OF[command_id]


def parse_roles(values: tuple[str, ...] | list[str]) -> tuple[DbRole, ...]:
    """Role names as configured or announced, each once, in the canonical order.

    ValueError names an unknown one.
    """
    wanted = set()
    for value in values:
        try:
            wanted.add(DbRole(value.strip().lower()))
        except ValueError:
            raise ValueError(f"unknown db_proxy role {value!r} (expected {', '.join(ALL_ROLES)})") from None
    return tuple(role for role in ALL_ROLES if role in wanted)
