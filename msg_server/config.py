"""Configuration of a msg_server (gateway)."""

from __future__ import annotations

from dataclasses import dataclass

from common.cluster_config import ClusterConfig
from common.config import ConfigError, setting, split_address, subsection


@dataclass(frozen=True, slots=True)
class MsgServerConfig:
    node_id: str = setting("msg-1", "Unique name of this gateway in the cluster.")
    host: str = setting("0.0.0.0", "Address to listen on for clients (a gateway accepts no internal links).")
    port: int = setting(8000, "TCP port for clients.")
    advertise_ip: str = setting(
        "127.0.0.1",
        "Address handed to clients by login_server (priorIP). Must be reachable by the "
        "clients: 127.0.0.1 only works for clients on this machine.",
    )
    advertise_backup_ip: str = setting(
        "", "Fallback address for clients (backupIP); empty: same as advertise_ip."
    )
    max_connections: int = setting(
        100_000, "Clients this gateway accepts before login_server stops handing it out."
    )
    max_connections_per_source: int = setting(
        1000,
        "Connections one source address may hold, logged in or not; more are closed on accept. An office "
        "behind one NAT address needs one per user and device, so keep it above that.",
    )
    max_unauthenticated: int = setting(
        2000,
        "Connections not yet logged in, from all addresses; past it the oldest one of the address "
        "holding the most is closed. Keeps room for logged-in users below the open-file limit.",
    )
    max_unauthenticated_per_source: int = setting(
        64, "Connections not yet logged in from one address; more are closed on accept."
    )
    msg_rate: float = setting(
        20.0,
        "Messages per second one connection may send, sustained (a token bucket; TeamTalk drops past 20/s "
        "silently). Past it a message gets no ack (the client resends), counted and logged once per burst.",
    )
    msg_burst: int = setting(100, "Messages one connection may send at once before msg_rate applies.")
    user_msg_rate: float = setting(
        40.0, "Messages per second one user may send from all its connections on this gateway, sustained."
    )
    user_msg_burst: int = setting(200, "Messages one user may send at once before user_msg_rate applies.")
    request_rate: float = setting(
        100.0, "Requests per second (of any command) one connection may make, sustained; past it, refused."
    )
    request_burst: int = setting(
        500, "Requests one connection may make at once before request_rate applies (a login sync is ~20)."
    )
    profile_rate: float = setting(
        0.5, "Profile changes (sign info, avatar) per second one user may make, sustained; past it, refused."
    )
    profile_burst: int = setting(10, "Profile changes one user may make at once before profile_rate applies.")
    login_rate_per_source: float = setting(
        50.0,
        "Login attempts per second one source address may make, sustained; past it a login is refused "
        "(and its connection closed) before db_proxy hears of it. A whole office behind one NAT "
        "address reconnecting at once gets login_burst_per_source at once, then this rate.",
    )
    login_burst_per_source: int = setting(
        500, "Login attempts one source address may make at once before login_rate_per_source applies."
    )
    partial_frame_timeout: float = setting(
        30.0, "Seconds a logged-in client may take to finish sending a frame it started; then it is closed."
    )
    write_stall_timeout: float = setting(
        30.0,
        "Seconds a client may leave bytes queued to it without reading any of them before it is cut off "
        "as a slow reader (a large answer it asked for is not an offence while it reads).",
    )
    max_frame_size: int = setting(
        64 * 1024, "Largest client frame in bytes, header included; larger closes the connection."
    )
    max_write_buffer: int = setting(
        1 << 20,
        "Unsent bytes of frames a client did not ask for (pushes, notices) held for it before it is cut "
        "off as a slow reader. A reply it asked for is streamed whatever its size, one at a time, and "
        "only write_stall_timeout applies to it: per client at most one reply + this + 320 KiB is held.",
    )
    max_pending_requests: int = setting(
        64, "Requests one client may have in flight before we stop reading from it."
    )
    login_timeout: float = setting(15.0, "Seconds a new connection has to log in.")
    heartbeat_timeout_pc: float = setting(
        120.0, "Seconds of silence after which a desktop client is dropped."
    )
    heartbeat_timeout_mobile: float = setting(
        300.0, "Seconds of silence after which a mobile client is dropped."
    )
    request_timeout: float = setting(10.0, "Seconds to wait for db_proxy on a client's behalf.")
    backlog: int = setting(4096, "Listen backlog (TeamTalk's 64 overflows in login storms).")
    route_loss_grace: float = setting(
        0.0,
        "Seconds without any route_server link after which the gateway closes its logged-in clients "
        "(the route servers dropped their sessions, so they would miss pushes; they reconnect through "
        "discovery and sync). 0: the cluster's detection time (heartbeat_interval * heartbeat_misses); "
        "negative: never.",
    )
    load_report_interval: float = setting(2.0, "Seconds between load reports to login_server.")
    login_servers: tuple[str, ...] = setting(
        ["127.0.0.1:8100"], "login_server gateway-link addresses; the gateway reports to all of them."
    )
    route_servers: tuple[str, ...] = setting(
        ["127.0.0.1:8200"], "route_server addresses; the gateway links to every one."
    )
    file_servers: tuple[str, ...] = setting(
        [],
        "file_server internal-link addresses. Online transfers go to any linked one; offline files "
        "to the first that is up (with a disk store, run one, or share its store: docs/files.md). "
        "Empty: file transfer is refused (IMFileRsp result_code 1).",
    )
    db_proxies: tuple[str, ...] = setting(
        ["127.0.0.1:10600"],
        "db_proxy addresses. A conversation always goes to the same one, so list them in the same "
        "order on every gateway.",
    )
    # -- saving messages: batches to db_proxy and their admission (msg_server/save_batch.py) --
    # The messages a gateway receives in one event-loop turn go to each db_proxy as one
    # DB_SAVE_MSGS frame; the saves outstanding on one db_proxy link are bounded, and a
    # message past the bound is refused at once (no ack: the client resends later) instead
    # of waiting behind work that could not be done in time.
    save_batch_max_items: int = setting(
        256, "Messages in one DB_SAVE_MSGS frame at most; more gathered in one turn go in several frames."
    )
    save_batch_max_bytes: int = setting(
        1 << 20, "Bytes of messages in one DB_SAVE_MSGS frame at most (one message always fits)."
    )
    max_saves_outstanding: int = setting(
        2048,
        "Messages sent to (or queued for) one db_proxy link and not yet answered; past it a message is "
        "refused at once (Overloaded, counted in imcluster_gateway_saves_refused).",
    )
    max_save_bytes_outstanding: int = setting(
        16 << 20, "Bytes of messages outstanding on one db_proxy link; past it, refused at once."
    )
    max_save_wait: float = setting(
        0.75,
        "Seconds the oldest unanswered DB_SAVE_MSGS frame on a db_proxy link may have waited; while it "
        "is older, new messages to that link are refused at once: they would be acked later than a "
        "client waits for (at twice the capacity, benchmarks/perf.py: no ack later than 1 s). Above "
        "db_proxy's own queue wait (save_max_wait, 0.5 s), which refuses what queued too long first.",
    )
    metrics_host: str = setting(
        "127.0.0.1",
        "Address of /metrics and /healthz. Loopback by default: set this host's internal address for "
        "a Prometheus elsewhere, never a client-facing one.",
    )
    metrics_port: int = setting(8010, "HTTP port of /metrics (Prometheus) and /healthz; -1: off.")
    log_level: str = setting("INFO", "Logging level.")
    cluster: ClusterConfig = subsection(  # noqa: RUF009 (it returns a dataclasses.field)
        ClusterConfig,
        "cluster",
        "The shared table: cluster secret, mutual TLS, heartbeats of internal links.",
    )

    @property
    def route_loss_after(self) -> float | None:
        """Seconds of route loss before clients are closed; None: never."""
        if self.route_loss_grace < 0:
            return None
        return self.route_loss_grace or self.cluster.dead_after

    def __post_init__(self) -> None:
        for key in ("login_servers", "route_servers", "db_proxies", "file_servers"):
            for address in getattr(self, key):
                split_address(f"msg_server.{key}", address)
        if not self.db_proxies:
            raise ConfigError("msg_server.db_proxies: at least one db_proxy is needed")
        for key in (
            "max_connections_per_source",
            "max_unauthenticated",
            "max_unauthenticated_per_source",
            "msg_burst",
            "user_msg_burst",
            "request_burst",
            "profile_burst",
            "login_burst_per_source",
            "save_batch_max_items",
            "save_batch_max_bytes",
            "max_saves_outstanding",
            "max_save_bytes_outstanding",
        ):
            if getattr(self, key) <= 0:
                raise ConfigError(f"msg_server.{key}: must be positive, got {getattr(self, key)}")
        for key in (
            "msg_rate",
            "user_msg_rate",
            "request_rate",
            "profile_rate",
            "login_rate_per_source",
            "partial_frame_timeout",
            "write_stall_timeout",
            "max_save_wait",
        ):
            if getattr(self, key) <= 0:
                raise ConfigError(f"msg_server.{key}: must be positive, got {getattr(self, key)}")
        if self.max_frame_size < 16:
            raise ConfigError("msg_server.max_frame_size: must be at least 16")
        for key in ("login_servers", "route_servers", "db_proxies", "file_servers"):
            self.cluster.require_secret_for_peers(f"msg_server.{key}", getattr(self, key))
