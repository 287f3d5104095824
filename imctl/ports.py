"""The ports of a local cluster (``imctl up``): a plan that never collides, and a check that each is free.

The plan keeps the documented layout from ``--base-port`` (gateways at
base+0, +1, ..., their metrics from base+10, login_server's gateway link at
base+100, routes from base+200, file_server at base+600, msfs at base+700,
db_proxies from base+2600) and moves a port only where counts would make two
meet (``--gateways 11``: the eleventh gateway's port is the first one's
metrics port): each port takes the next one nobody has from where the
layout puts it, the ports clients use first (so they stay where the layout
says unless --http-port is in their way), then the internal ones.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterable
from dataclasses import dataclass

MAX_PORT = 65535
#: Gateway metrics start this far after the first gateway (further with more gateways).
GATEWAY_METRICS = 10


class PortError(ValueError):
    """A port of the plan cannot be had: past 65535, or in use (the message says what to pass)."""


@dataclass(frozen=True)
class Port:
    server: str  # the node: msg-1, login-1, ...
    key: str  # its setting: port, metrics_port, http_port, gateway_port, client_port
    port: int  # 0: the OS picks one (reported in the server's ready file)
    what: str  # for people: "msg-1 client port"
    public: bool  # clients connect to it: open it in the firewall
    option: str  # the imctl up option that moves it

    @property
    def host(self) -> str:
        """Where the bind test runs: all addresses for client ports, loopback for internal ones."""
        return "0.0.0.0" if self.public else "127.0.0.1"


def plan_ports(
    base: int,
    http_port: int,
    gateways: int,
    routes: int,
    dbs: Iterable[str],
    files: bool,
    free_internal: bool = False,
) -> list[Port]:
    """Every port of the cluster; internal ones 0 with ``free_internal`` (the OS picks them)."""
    # The login_server's HTTP port is given as it is; then the other client ports, then the rest.
    public = [("login-1", "http_port", http_port, "login_server http", "--http-port")]
    if files:
        public.append(("file-1", "client_port", base + 600, "file_server client", "--base-port"))
        public.append(("msfs-1", "port", base + 700, "msfs http", "--base-port"))
    public += [
        (f"msg-{i + 1}", "port", base + i, f"msg-{i + 1} client", "--base-port") for i in range(gateways)
    ]
    metrics_from = base + max(GATEWAY_METRICS, gateways)
    internal = [(f"msg-{i + 1}", "metrics_port", metrics_from + i, "metrics") for i in range(gateways)]
    internal += [
        ("login-1", "gateway_port", base + 100, "gateway link"),
        ("login-1", "metrics_port", base + 110, "metrics"),
    ]
    for i in range(routes):
        internal += [
            (f"route-{i + 1}", "port", base + 200 + 20 * i, "link"),
            (f"route-{i + 1}", "metrics_port", base + 210 + 20 * i, "metrics"),
        ]
    for i, name in enumerate(dbs):
        internal += [
            (name, "port", base + 2600 + 20 * i, "link"),
            (name, "metrics_port", base + 2610 + 20 * i, "metrics"),
        ]
    if files:
        internal += [
            ("file-1", "port", base + 610, "link"),
            ("file-1", "metrics_port", base + 620, "metrics"),
        ]
        internal.append(("msfs-1", "metrics_port", base + 710, "metrics"))

    used: set[int] = set()
    plan = []
    for server, key, wanted, what, option in public:
        port = _next_free(wanted, used, what, option)
        plan.append(Port(server, key, port, what, True, option))
    for server, key, wanted, role in internal:
        what = f"{server} {role}"
        if free_internal:
            plan.append(Port(server, key, 0, what, False, "--free-ports"))
        else:
            plan.append(
                Port(server, key, _next_free(wanted, used, what, "--base-port"), what, False, "--base-port")
            )
    return plan


def _next_free(wanted: int, used: set[int], what: str, option: str) -> int:
    """``wanted``, or the first port after it that the plan has not given yet."""
    port = wanted
    while port in used:
        port += 1
    _check_range(port, what, option)
    used.add(port)
    return port


def _check_range(port: int, what: str, option: str) -> None:
    if not 1 <= port <= MAX_PORT:
        raise PortError(f"port {port} ({what}) is outside 1-{MAX_PORT}: pass a lower {option}")


def in_use(port: Port) -> OSError | None:
    """The error binding ``port`` gives (EADDRINUSE, EACCES...), or None if it is free.

    SO_REUSEADDR as the servers set it: a port left in TIME_WAIT by the last run counts as free.
    """
    if port.port == 0:
        return None
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((port.host, port.port))
        except OSError as exc:
            return exc
    return None


def check_free(plan: Iterable[Port]) -> None:
    """Raise :class:`PortError` naming the first port of the plan that cannot be bound, and how to move it."""
    for port in plan:
        exc = in_use(port)
        if exc is None:
            continue
        advice = f"pass {port.option}"
        if not port.public:
            advice += " (e.g. --base-port 9000), or --free-ports to let the system pick internal ports"
        elif port.option == "--base-port":
            advice += " (e.g. --base-port 9000)"
        reason = "is in use" if exc.errno == errno.EADDRINUSE else f"cannot be bound ({exc.strerror})"
        raise PortError(f"port {port.port} ({port.what}) {reason}: {advice}")


def port_table(plan: Iterable[Port]) -> dict[tuple[str, str], int]:
    return {(p.server, p.key): p.port for p in plan}
