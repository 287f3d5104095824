"""All of db_proxy's services over its two stores, built in one place."""

from __future__ import annotations

from dataclasses import dataclass

from db_proxy.hash_pool import HashPool
from db_proxy.recipients import KnownUsers
from db_proxy.services.departments import DepartmentService
from db_proxy.services.groups import GroupService
from db_proxy.services.messages import MessageService
from db_proxy.services.users import UserService
from db_proxy.storage.model import Store
from db_proxy.user_rows import UserRows
from db_proxy.workers import MessageWorkers


@dataclass(frozen=True, slots=True)
class Services:
    directory: Store  # users, departments, device tokens, push shield, offline files
    store: Store  # messages, sessions, groups and members (perhaps the same database)
    known: KnownUsers  # the directory's users, as the message side sees them
    departments: DepartmentService
    groups: GroupService
    users: UserService
    messages: MessageService

    @classmethod
    def over(
        cls,
        directory: Store,
        store: Store,
        workers: MessageWorkers,
        password_log2_n: int,
        rows: UserRows | None = None,
        hash_pool: HashPool | None = None,
    ) -> Services:
        """The services of a db_proxy; the workers' cache of known users is the one
        every service shares (a deleted user is forgotten once, everywhere)."""
        known = workers.recipients
        departments = DepartmentService(directory)
        groups = GroupService(store, known)
        users = UserService(directory, known, groups, departments, password_log2_n, rows, hash_pool)
        return cls(directory, store, known, departments, groups, users, MessageService(workers))
