"""Client commands, one coroutine each, in one typed table per service.

Every handler gets the gateway, the connection and the typed request, and
returns the reply (the connection sends it with the request's seq_num) or
raises an ImError to have the request refused (see ``base.client_error``).
``user_id`` fields in requests are overwritten with the logged-in user: a
client can act only as itself.
"""

from msg_server.handlers import buddy, files, groups, messages, session, switch
from msg_server.handlers.table import ClientCommands, Entry, Job

CLIENT_COMMANDS = (
    ClientCommands()
    .include(session.COMMANDS)
    .include(buddy.COMMANDS)
    .include(messages.COMMANDS)
    .include(groups.COMMANDS)
    .include(files.COMMANDS)
    .include(switch.COMMANDS)
)

__all__ = ["CLIENT_COMMANDS", "ClientCommands", "Entry", "Job"]
