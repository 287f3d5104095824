"""db_proxy's domain operations, each written once.

The gateway-facing handlers (:mod:`db_proxy.handlers`) and the admin methods
call the same service; each operation returns its result and the notices to
push (:mod:`.outcome`), which :mod:`db_proxy.notices` sends. Services use the
directory store for users and departments and the messages store for groups
and messages (they may be two databases); what the messages side needs to
know about users comes from :class:`db_proxy.recipients.KnownUsers`.
"""
