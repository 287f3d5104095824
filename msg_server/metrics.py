"""A gateway's metrics (see common.metrics for the shared ones)."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, Metric

from common.link import Upstream
from common.metrics import latency_histogram

if TYPE_CHECKING:
    from msg_server.gateway import Gateway


class Tally:
    """A counter without labels for what happens once per message: ``inc`` is an integer add
    (prometheus_client's Counter takes a lock per call), exposed as a counter of the same name
    (``<name>_total``) when scraped."""

    def __init__(self, name: str, documentation: str, registry: CollectorRegistry = REGISTRY) -> None:
        self.name = name
        self.documentation = documentation
        self.value = 0.0
        registry.register(self)

    def inc(self, amount: float = 1) -> None:
        self.value += amount

    def describe(self) -> list[Metric]:
        return [CounterMetricFamily(self.name, self.documentation)]

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self.name, self.documentation, value=self.value)


CONNECTIONS = Gauge("imcluster_gateway_connections", "Open client connections (logged in or not).")
SESSIONS = Gauge("imcluster_gateway_sessions", "Logged-in client connections.")
MAX_CONNECTIONS = Gauge(
    "imcluster_gateway_max_connections",
    "Client connections this gateway admits (max_connections, capped by the open-file limit): "
    "for alerts on imcluster_gateway_connections nearing it.",
)
# Once per message or push: Tally, not Counter.
MESSAGES_IN = Tally("imcluster_gateway_messages_in", "IMMsgData frames received from clients.")
MESSAGES_ACKED = Tally("imcluster_gateway_messages_acked", "IMMsgDataAck sent (messages durably stored).")
PUSHED = Tally("imcluster_gateway_frames_pushed", "Frames pushed to clients (messages, notifications).")
PUSHES_DROPPED = Counter(
    "imcluster_gateway_pushes_dropped",
    "Pushes not written to a client, by reason: no_session (the recipient has no session here), "
    "connection_gone (closing, or cut off as a slow reader), duplicate (the connection has that "
    "msg_id already: a redelivery), gap_unfilled (a missing message storage did not return in "
    "time, or too old to fetch: written past).",
    ["reason"],
)
ACK_LATENCY = latency_histogram(
    "imcluster_gateway_ack_latency_seconds", "From a client's IMMsgData arriving to its ack leaving."
)
RELAY_LATENCY = latency_histogram(
    "imcluster_gateway_relay_latency_seconds",
    "From db_proxy publishing a stored message (an acknowledged push: its commit) to it reaching "
    "this gateway.",
)
GAPS_FILLED = Counter(
    "imcluster_gateway_gaps_filled",
    "Messages fetched from storage and written before a later push (a gap in a conversation's ids).",
)
PUSH_LATENCY = latency_histogram(
    "imcluster_gateway_push_latency_seconds",
    "From a message's commit (PushMsg.committed_at_us) to its acknowledged push being written here.",
)
CLIENTS_CLOSED_ROUTE_LOST = Counter(
    "imcluster_gateway_clients_closed_route_lost",
    "Logged-in clients closed because no route server was linked for longer than route_loss_grace "
    "(the cluster took them for offline; they reconnect and sync).",
)
REFUSED = Counter(
    "imcluster_gateway_refused",
    "Client requests refused, by command and kind (invalid_argument, not_found, conflict, forbidden, "
    "unavailable, overloaded, bug). The only trace of a refusal that TeamTalk's protocol cannot "
    "answer (a message not acked, a read receipt, a P2P notice); log lines about them are rate-limited.",
    ["command", "kind"],
)
FILE_REFUSALS = Counter(
    "imcluster_gateway_file_refusals",
    "File-transfer commands refused, by reason: invalid (bad name, size, peer or task id), "
    "receiver_offline (an online transfer to a user who is not), no_file_server, file_server (it "
    "refused the task: too big, too many...), not_found (an offline file that is not this user's), "
    "unavailable (a dependency down).",
    ["reason"],
)
UPSTREAM_UP = Gauge(
    "imcluster_gateway_upstream_up", "1 while a link to a db_proxy/route/login/file server is up.", ["link"]
)


def bind(gateway: Gateway) -> None:
    """Gauges read the gateway's live state at scrape time."""
    CONNECTIONS.set_function(lambda: len(gateway.connections))
    SESSIONS.set_function(lambda: gateway.logged_in)
    MAX_CONNECTIONS.set(gateway.max_connections)
    for link in gateway.all_links:
        UPSTREAM_UP.labels(link.name).set_function(partial(_up, link))


def _up(link: Upstream) -> float:
    return 1.0 if link.connected else 0.0
