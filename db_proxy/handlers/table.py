"""Every command a gateway may send db_proxy, in one table (server.py then keeps
those of the roles it serves)."""

from __future__ import annotations

from common.rpc import Commands
from db_proxy.handlers.directory import DirectoryHandlers
from db_proxy.handlers.files import FileHandlers
from db_proxy.handlers.groups import GroupHandlers
from db_proxy.handlers.login import LoginHandlers
from db_proxy.handlers.messages import MessageHandlers
from db_proxy.notices import Notices
from db_proxy.services.registry import Services
from db_proxy.workers import MessageWorkers


def gateway_commands(
    login: LoginHandlers, workers: MessageWorkers, services: Services, notices: Notices
) -> Commands:
    """Each part on the store it belongs with: users, departments, device tokens and
    offline files on the directory; messages, sessions and groups on the messages store."""
    directory, store = services.directory, services.store
    return (
        Commands()
        .include(login.commands())
        .include(MessageHandlers(store, workers).commands())
        .include(DirectoryHandlers(directory, services.users, notices).commands())
        .include(GroupHandlers(store, services.groups, notices).commands())
        .include(FileHandlers(directory).commands())
    )
