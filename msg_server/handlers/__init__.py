"""Client commands, one coroutine each, in one table per service.

Every handler gets the gateway, the connection, the request frame (its
seq_num is echoed in the reply) and the parsed message. ``user_id`` fields
in requests are overwritten with the logged-in user: a client can act only
as itself.
"""

from msg_server.handlers import buddy, groups, messages, session, switch
from msg_server.handlers.base import Handler

CLIENT_COMMANDS: dict[int, Handler] = {
    **session.COMMANDS,
    **buddy.COMMANDS,
    **messages.COMMANDS,
    **groups.COMMANDS,
    **switch.COMMANDS,
}

__all__ = ["CLIENT_COMMANDS", "Handler"]
