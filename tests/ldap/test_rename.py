"""What sync needs of the directory store, on both engines: external ids kept and
changed, renames (same id; a taken name refused; the computed search key follows)."""

from __future__ import annotations

import pytest

from db_proxy.storage.model import DuplicateName, InvalidValue
from db_proxy.storage.schema import EXTERNAL_ID_LIMIT
from db_proxy.storage.sql import SqlStore
from tests.storage.conftest import store, store_url  # noqa: F401 (fixtures)


async def test_external_id_is_stored_and_changed(store: SqlStore) -> None:  # noqa: F811
    user_id = await store.create_user("ann", "h", nick="Ann", external_id="bf68-0001")
    (ann,) = await store.users_by_id([user_id])
    assert ann.external_id == "bf68-0001"
    local = await store.create_user("zed", "h")
    assert (await store.users_by_id([local]))[0].external_id == ""  # made here
    changed = await store.update_user_profile(local, external_id="guid-2")
    assert changed is not None and changed.external_id == "guid-2"
    with pytest.raises(InvalidValue):
        await store.update_user_profile(local, external_id="x" * (EXTERNAL_ID_LIMIT + 1))
    users, _ = await store.list_users(0, 10)
    assert {u.name: u.external_id for u in users} == {"ann": "bf68-0001", "zed": "guid-2"}


async def test_a_rename_keeps_the_id_and_refuses_a_taken_name(store: SqlStore) -> None:  # noqa: F811
    ann = await store.create_user("ann", "h", nick="Ann")
    await store.create_user("bob", "h")
    renamed = await store.update_user_profile(ann, name="anne")
    assert renamed is not None and (renamed.id, renamed.name, renamed.domain) == (ann, "anne", "anne")
    assert await store.user_by_name("ann") is None
    with pytest.raises(DuplicateName):
        await store.update_user_profile(ann, name="bob")
    with pytest.raises(InvalidValue):
        await store.update_user_profile(ann, name="")
    (still,) = await store.users_by_id([ann])
    assert still.name == "anne"
    assert await store.create_user("ann", "h") > ann  # the old name is free again
