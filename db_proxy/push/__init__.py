"""Acknowledged pushes of stored messages (issue 8).

After a commit, :mod:`.entries` turns each saved message into a delivery log
entry and :class:`.appender.LogAppender` appends them (or keeps them, bounded,
while the log is down); :class:`.dispatcher.PushDispatcher` consumes the log
and pushes each entry through a route server, acknowledging it once the route
server answered; :class:`.routes.RouteLinks` are the route server links both
it and the one-way notices use.
"""

from db_proxy.push.appender import LogAppender
from db_proxy.push.dispatcher import PushDispatcher
from db_proxy.push.entries import push_entry
from db_proxy.push.routes import RouteLinks

__all__ = ["LogAppender", "PushDispatcher", "RouteLinks", "push_entry"]
