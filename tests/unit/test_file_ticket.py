"""Per-user file tickets (common.file_ticket) and the file server's ticket key."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from common import file_ticket
from common.cluster_config import ClusterConfig
from file_server.ticket_key import KEY_FILE, ticket_keys

SECRET = b"k" * 32


def test_a_ticket_is_good_only_for_its_user_and_role() -> None:
    key = file_ticket.new_task_key()
    ticket = file_ticket.mint(SECRET, key, 12, file_ticket.RECEIVER)
    assert len(ticket) == file_ticket.TICKET_LEN and file_ticket.task_key_of(ticket) == key
    assert file_ticket.verify(SECRET, ticket, 12, file_ticket.RECEIVER) == key
    assert file_ticket.verify(SECRET, ticket, 13, file_ticket.RECEIVER) is None  # another user
    assert file_ticket.verify(SECRET, ticket, 12, file_ticket.SENDER) is None  # another role
    assert file_ticket.verify(b"x" * 32, ticket, 12, file_ticket.RECEIVER) is None  # another server's key
    assert file_ticket.mint(SECRET, key, 11, file_ticket.SENDER) != ticket


def test_a_changed_character_breaks_the_ticket() -> None:
    key = file_ticket.new_task_key()
    ticket = file_ticket.mint(SECRET, key, 5, file_ticket.DOWNLOAD)
    for i in range(len(ticket)):
        if ticket[i] == "-":
            continue
        flipped = ticket[:i] + ("0" if ticket[i] != "0" else "1") + ticket[i + 1 :]
        assert file_ticket.verify(SECRET, flipped, 5, file_ticket.DOWNLOAD) is None
    assert file_ticket.verify(SECRET, ticket.upper(), 5, file_ticket.DOWNLOAD) is None


@given(st.text(max_size=80), st.integers(0, 2**32 - 1), st.integers(1, 4))
def test_anything_else_is_refused(ticket: str, user_id: int, role: int) -> None:
    assert file_ticket.verify(SECRET, ticket, user_id, role) is None


def test_the_key_derives_from_the_cluster_secret(tmp_path: Path) -> None:
    one = ticket_keys(ClusterConfig(secret="s" * 20), str(tmp_path / "a"))
    two = ticket_keys(ClusterConfig(secret="s" * 20), str(tmp_path / "b"))
    assert one == two and len(one) == 1  # every file server of a cluster: the same key
    assert not (tmp_path / "a").exists()  # nothing kept on disk
    rotating = ticket_keys(ClusterConfig(secret="t" * 20, secret_previous="s" * 20), str(tmp_path))
    assert rotating[1] == one[0]  # tickets of the previous secret still verify


def test_without_a_secret_the_key_is_kept_private(tmp_path: Path) -> None:
    store = tmp_path / "store"
    first = ticket_keys(ClusterConfig(), str(store))
    assert ticket_keys(ClusterConfig(), f"file://{store}") == first  # a restart: the same key
    mode = stat.S_IMODE(os.stat(store / KEY_FILE).st_mode)
    assert mode == 0o600
    assert ticket_keys(ClusterConfig(), str(tmp_path / "other")) != first
