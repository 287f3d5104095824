"""Admin methods served by db_proxy (see docs/admin-api.md): users,
departments, groups, sending messages, and this process's status."""

from __future__ import annotations

from typing import Any

from common.admin import AdminMethod
from db_proxy.config import DbProxyConfig
from db_proxy.storage.model import Store
from db_proxy.workers import MessageWorkers


class DbAdmin:
    def __init__(
        self, config: DbProxyConfig, store: Store, workers: MessageWorkers, redis: Any | None
    ) -> None:
        self.config = config
        self.store = store
        self.workers = workers
        self.redis = redis

    def methods(self) -> dict[str, AdminMethod]:
        return {}
