"""The audit, export and retention tests: storage and db_proxy's methods on both
engines (the storage tests' fixtures), and a live cluster with the admin API on."""

from __future__ import annotations

from types import SimpleNamespace
from typing import cast

import pytest

from db_proxy.config import DbProxyConfig
from db_proxy.handlers.admin_audit import AuditAdmin
from db_proxy.services.registry import Services
from db_proxy.storage.sql import SqlStore
from tests.storage.conftest import store, store_url

__all__ = ["admin_of", "store", "store_url"]


def admin_of(store: SqlStore, **settings: object) -> AuditAdmin:
    """db_proxy's audit methods over one store (directory and messages alike)."""
    config = DbProxyConfig(**settings)  # type: ignore[arg-type]
    return AuditAdmin(config, cast(Services, SimpleNamespace(directory=store, store=store)))


@pytest.fixture
def audit_admin(store: SqlStore) -> AuditAdmin:
    return admin_of(store)
