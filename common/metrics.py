"""Prometheus metrics and /healthz for every server.

Each process registers its metrics in the default registry (one server per
process) and serves ``/metrics`` and ``/healthz`` on a small aiohttp app of
its own, so a wedged client port does not hide the health endpoint. Metric
names are ``imcluster_*``; per-server ones say which server in ``help``.
"""

from __future__ import annotations

import inspect
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest

log = logging.getLogger(__name__)

# Shared by every server that speaks frames.
ERRORS = Counter(
    "imcluster_errors",
    "Errors by kind (protocol, bad_body, before_login, slow_reader, timeout, upstream...).",
    ["kind"],
)
LOGINS = Counter("imcluster_logins", "Login attempts by result (ok, refused, error).", ["result"])
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def latency_histogram(name: str, doc: str) -> Histogram:
    return Histogram(name, doc, buckets=LATENCY_BUCKETS)


Health = Callable[[], dict[str, Any] | Awaitable[dict[str, Any]]]


async def start_metrics_server(host: str, port: int, health: Health) -> tuple[web.AppRunner, int] | None:
    """Serve /metrics and /healthz; ``port`` -1 turns them off, 0 picks a free one.

    ``health()`` returns a JSON-able dict; its ``"ok"`` key (default True)
    decides between 200 and 503.
    """
    if port < 0:
        return None

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(request: web.Request) -> web.Response:
        state = health()
        if inspect.isawaitable(state):
            state = await state
        return web.json_response(state, status=200 if state.get("ok", True) else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    # Bind the socket ourselves: with port 0 we need to know which port it got.
    sock = socket.create_server((host, port), reuse_port=False)
    bound = int(sock.getsockname()[1])
    await web.SockSite(runner, sock).start()
    log.info("metrics on http://%s:%d/metrics", host, bound)
    return runner, bound


# The internal links (common.link).
LINK_AUTH_FAILURES = Counter(
    "imcluster_link_auth_failures",
    "Internal link handshakes that failed, by reason (bad_proof, no_hello, refused, handshake_timeout...).",
    ["reason"],
)
LINK_LATE_REPLIES = Counter(
    "imcluster_link_late_replies", "Replies that arrived after their request had timed out (dropped)."
)
LINK_TIMEOUTS = Counter("imcluster_link_request_timeouts", "Internal requests that got no reply in time.")
LINK_SILENT = Counter("imcluster_link_silent_peers", "Links dropped because the peer went silent.")
TLS_CERT_EXPIRY = Gauge(
    "imcluster_tls_cert_expiry_timestamp_seconds",
    "When this server's TLS certificate (cert=node) and the cluster CA (cert=ca) stop being valid, "
    "as a Unix time; exported only with TLS on.",
    ["cert"],
)
