"""A file server's metrics (see common.metrics for the shared ones)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge

from file_server.tasks import REASONS

if TYPE_CHECKING:
    from file_server.server import FileServer

TASKS_OPEN = Gauge("imcluster_file_tasks_open", "Transfers open on this file server (tasks and downloads).")
CONNECTIONS = Gauge("imcluster_file_connections", "Client connections to this file server.")
TASKS_MADE = Counter("imcluster_file_tasks_made", "Tasks made for gateways (FILE_TASK), by mode.", ["mode"])
BYTES_RELAYED = Counter("imcluster_file_bytes_relayed", "Bytes relayed from senders to receivers (online).")
BYTES_STORED = Counter("imcluster_file_bytes_stored", "Bytes of offline uploads written to the store.")
BYTES_SERVED = Counter("imcluster_file_bytes_served", "Bytes of offline files sent to downloaders.")
OFFLINE_SWEPT = Counter("imcluster_file_offline_swept", "Offline files removed after offline_ttl.")
OFFLINE_DELETED = Counter("imcluster_file_offline_deleted", "Offline files removed on FILE_OFFLINE_DELETE.")
REFUSALS = Counter(
    "imcluster_file_refusals",
    "Tasks, logins and frames refused, and transfers dropped, by reason: too_large, empty, same_user, "
    "too_many_tasks, too_many_user_tasks (FILE_TASK); bad_ticket, not_participant, no_task, "
    "already_joined, not_uploaded (logins and FILE_OFFLINE_READY); bad_frame, before_login, "
    "not_expected, wrong_task, bad_offset, bad_size, too_much_data (a connection closed for its frame); "
    "join_timeout, idle_timeout, login_timeout (dropped); too_many_connections, store_error, deleted.",
    ["reason"],
)
for _reason in REASONS:
    REFUSALS.labels(_reason)  # every series exists from the start, at 0


def bind(server: FileServer) -> None:
    TASKS_OPEN.set_function(lambda: server.tasks.open_count)
    CONNECTIONS.set_function(lambda: len(server.clients))
