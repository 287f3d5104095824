"""Configuration of a db_proxy."""

from __future__ import annotations

from dataclasses import dataclass

from common.cluster_config import ClusterConfig
from common.config import ConfigError, setting, split_address, subsection
from common.db_roles import ALL_ROLES, parse_roles
from db_proxy.offline_push.config import OfflinePushConfig


@dataclass(frozen=True, slots=True)
class DbProxyConfig:
    node_id: str = setting("db-1", "Unique name of this db_proxy.")
    host: str = setting(
        "127.0.0.1",
        "Address to listen on for gateway and admin links; anything but loopback requires the "
        "cluster secret.",
    )
    port: int = setting(10600, "TCP port for gateway and admin links.")
    roles: tuple[str, ...] = setting(
        list(ALL_ROLES),
        "What this db_proxy serves: login, directory, messages, admin (common/db_roles.py). Gateways "
        "and login_server send each request to a db_proxy serving its role; several db_proxies may "
        "serve one role (they fail over). The pushes of stored messages and the offline push run "
        "where messages is served.",
    )
    database_url: str = setting(
        "sqlite:///var/imcluster.db",
        "Storage: sqlite:///PATH (embedded default) or mysql://USER:PASSWORD@HOST:PORT/DB. The "
        "database of every role unless the next two say otherwise.",
    )
    directory_database_url: str = setting(
        "",
        "Where users, departments, device tokens and offline files live (roles login, directory, "
        "admin; the messages role reads users from it through a bounded cache); empty: database_url.",
    )
    messages_database_url: str = setting(
        "",
        "Where messages, sessions and groups live (roles messages and admin); empty: database_url. "
        "Every db_proxy of a cluster must name the same two databases.",
    )
    redis_url: str = setting(
        "", "Optional Redis for caches (redis://127.0.0.1:6379/0); empty: in-process caches only."
    )
    workers: int = setting(8, "Ordered message workers; a conversation always lands on the same one.")
    queue_size: int = setting(
        1024,
        "Jobs each worker may queue; past that requests fail with 'overloaded'. One conversation may "
        "hold a quarter of it (and a quarter of the worker's 8 MiB of message bodies), so a flood into "
        "one cannot starve the others on its worker; the queue is bounded in time too (save_max_wait).",
    )
    batch_size: int = setting(64, "Messages committed in one transaction when they queue up (group commit).")
    # -- overload (issue 12): the message workers' queues bounded in time --
    save_max_wait: float = setting(
        0.5,
        "Seconds a message (or read receipt) may wait in its worker's queue. One is refused "
        "'overloaded' at once when the jobs ahead of it would take longer than this to commit at the "
        "worker's recent pace (at twice the capacity the excess is refused, not queued), and one that "
        "waited this long anyway (storage stalled) is refused then. A transaction is never abandoned.",
    )
    # -- end of the overload block --
    hash_threads: int = setting(
        0,
        "Threads for password hashing (scrypt releases the GIL: one per core uses all); 0: one per core. "
        "Logins go first on all but one, which prefers bulk hashing (user imports).",
    )
    max_pending_logins: int = setting(
        1024, "Logins waiting for a hashing thread before new ones are refused."
    )
    login_cache_ttl: int = setting(
        86400, "Seconds a verified password stays in the fast-path cache (0: off)."
    )
    login_failure_limit: int = setting(
        5,
        "Failed logins for one user from one source address before each further attempt from there "
        "must wait (1 s, doubling up to login_delay_max). Other addresses are not affected: a guesser "
        "cannot lock a colleague out.",
    )
    login_failure_window: int = setting(
        900, "Seconds a failed login is remembered (the counters' expiry, in Redis too)."
    )
    login_delay_max: float = setting(60.0, "Longest wait imposed between attempts, in seconds.")
    login_source_limit: int = setting(
        100,
        "Failed logins from one source address, for any users, per window, before that address is "
        "refused every login for login_source_lock seconds (password spraying).",
    )
    login_source_lock: float = setting(300.0, "Seconds a spraying address is refused logins.")
    login_user_limit: int = setting(
        50,
        "Failed logins for one user from all addresses per window before addresses that never logged "
        "in as that user must wait too (a distributed guesser); addresses it logged in from stay free.",
    )
    login_throttle_memory: int = setting(
        16 * 1024 * 1024,
        "Bytes the in-process failure counters may take (when Redis is absent or down); the oldest go "
        "first. Keys are fixed-size keyed hashes, whatever the name sent.",
    )
    route_servers: tuple[str, ...] = setting(
        ["127.0.0.1:8200"], "route_server addresses, for pushing stored messages."
    )
    delivery_log: str = setting(
        "memory://",
        "Where stored messages wait to be pushed (the delivery log): memory:// (in process), "
        "redis://HOST:PORT/DB or nats://HOST:PORT (JetStream), with options as in docs/delivery-log.md. "
        "Every db_proxy of a cluster must name the same log (and the same partitions).",
    )
    delivery_lease_ttl: float = setting(
        1.5,
        "Seconds a db_proxy's lease on a delivery log partition lasts unless renewed (every third of it); "
        "when a db_proxy dies another takes its partitions over after this.",
    )
    push_timeout: float = setting(
        1.0, "Seconds one push to a route server may take before the next is tried."
    )
    push_give_up: float = setting(
        10.0, "Seconds a recipient may stay unanswered before its push is dropped (counted; it syncs later)."
    )
    metrics_host: str = setting(
        "127.0.0.1",
        "Address of /metrics and /healthz. Loopback by default: set this host's internal address for "
        "a Prometheus elsewhere, never a client-facing one.",
    )
    metrics_port: int = setting(10610, "HTTP port of /metrics (Prometheus) and /healthz; -1: off.")
    system_user: str = setting(
        "system",
        "Login name of the account admin messages come from: a system user, made on first use (an "
        "existing account of that name is made one at start), that cannot log in and no list shows.",
    )
    admin_text_encoding: str = setting(
        "teamtalk",
        "How admin-sent text is written into messages: teamtalk (AES+base64 with the key TeamTalk's "
        "clients use, so they can show it) or plain (UTF-8 as is, for clients of your own).",
    )
    password_log2_n: int = setting(
        14, "scrypt cost (log2 N) of passwords set through the admin API; below 14 for tests only."
    )
    log_level: str = setting("INFO", "Logging level.")
    # -- retention (issue 13): old messages and audit entries deleted (db_proxy/retention.py) --
    retention_single_days: int = setting(
        0, "Days 1:1 messages are kept (by their create time); older ones are deleted. 0: kept forever."
    )
    retention_group_days: int = setting(
        0, "Days group messages are kept (by their create time); older ones are deleted. 0: kept forever."
    )
    retention_audit_days: int = setting(365, "Days admin audit entries are kept (0: forever).")
    retention_batch_rows: int = setting(
        2000,
        "Rows deleted per transaction by retention; between two batches it pauses as long as the "
        "batch took, so message saves never wait long on it.",
    )
    retention_interval: float = setting(
        3600.0,
        "Seconds between retention runs, on every db_proxy serving messages (the first a minute after "
        "start, or sooner if this is shorter). Runs on two db_proxies at once are safe.",
    )
    # -- end of the retention block --
    # -- login (issue 12): the login's kept user rows (db_proxy/user_rows.py) --
    login_user_rows_ttl: float = setting(
        30.0,
        "Seconds a login keeps a user's row in process (0: read it every time). A change made through "
        "this db_proxy drops it at once, one made elsewhere when its invalidation arrives; if that is "
        "lost, a disabled or deleted user is still refused everywhere within this long.",
    )
    login_user_rows_entries: int = setting(100_000, "User rows a login db_proxy keeps at most.")
    login_user_rows_bytes: int = setting(
        64 * 1024 * 1024, "Bytes the kept user rows may take (counted generously); the least used go first."
    )
    offline_push: OfflinePushConfig = subsection(  # noqa: RUF009 (it returns a dataclasses.field)
        OfflinePushConfig,
        "offline_push",
        "Notifications to the devices of recipients who are offline (docs/offline-push.md).",
    )
    cluster: ClusterConfig = subsection(  # noqa: RUF009 (it returns a dataclasses.field)
        ClusterConfig,
        "cluster",
        "The shared table: cluster secret, mutual TLS, heartbeats of internal links.",
    )

    @property
    def served_roles(self) -> tuple[str, ...]:
        """``roles`` checked and in the canonical order."""
        return tuple(parse_roles(self.roles))

    @property
    def directory_url(self) -> str:
        return self.directory_database_url or self.database_url

    @property
    def messages_url(self) -> str:
        return self.messages_database_url or self.database_url

    def __post_init__(self) -> None:
        try:
            if not parse_roles(self.roles):
                raise ConfigError("db_proxy.roles: name at least one role")
        except ValueError as exc:
            raise ConfigError(f"db_proxy.roles: {exc}") from None
        for address in self.route_servers:
            split_address("db_proxy.route_servers", address)
        if self.workers < 1 or self.queue_size < 1 or self.batch_size < 1:
            raise ConfigError("db_proxy.workers, queue_size and batch_size must be at least 1")
        if not 0.01 <= self.save_max_wait <= 10:
            raise ConfigError("db_proxy.save_max_wait must be between 0.01 and 10 seconds")
        if self.hash_threads < 0 or self.login_user_rows_ttl < 0 or self.login_user_rows_entries < 0:
            raise ConfigError("db_proxy.hash_threads and login_user_rows_* must not be negative")
        if self.login_user_rows_ttl > 3600:
            raise ConfigError("db_proxy.login_user_rows_ttl: at most 3600 seconds")
        if not 1 <= self.password_log2_n <= 16:
            raise ConfigError("db_proxy.password_log2_n must be between 1 and 16")
        if self.admin_text_encoding not in ("teamtalk", "plain"):
            raise ConfigError("db_proxy.admin_text_encoding: expected teamtalk or plain")
        if not self.system_user or any(c.isspace() for c in self.system_user):
            raise ConfigError("db_proxy.system_user must be a login name (not empty, no spaces)")
        if self.delivery_log.partition(":")[0].lower() not in ("memory", "redis", "rediss", "nats"):
            raise ConfigError(
                "db_proxy.delivery_log: expected a memory://, redis://, rediss:// or nats:// URL"
            )
        if not 0.1 <= self.delivery_lease_ttl <= 60:
            raise ConfigError("db_proxy.delivery_lease_ttl must be between 0.1 and 60 seconds")
        if not 0 < self.push_timeout <= 60:
            raise ConfigError("db_proxy.push_timeout must be above 0 and at most 60 seconds")
        if not self.push_timeout <= self.push_give_up <= 3600:
            raise ConfigError("db_proxy.push_give_up must be at least push_timeout and at most 3600 seconds")
        if self.retention_single_days < 0 or self.retention_group_days < 0 or self.retention_audit_days < 0:
            raise ConfigError("db_proxy.retention_*_days must not be negative (0: keep forever)")
        if not 1 <= self.retention_batch_rows <= 100_000:
            raise ConfigError("db_proxy.retention_batch_rows must be between 1 and 100000")
        if not 0.1 <= self.retention_interval <= 7 * 86400:
            raise ConfigError("db_proxy.retention_interval must be between 0.1 seconds and 7 days")
        self.cluster.require_secret("db_proxy.host", self.host)
        self.cluster.require_secret_for_peers("db_proxy.route_servers", self.route_servers)
