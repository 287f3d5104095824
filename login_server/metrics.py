"""login_server's metrics, served at /metrics on its HTTP port."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, generate_latest

DISCOVERIES = Counter("imcluster_login_discoveries", "GET /msg_server answers by result.", ["result"])
GATEWAYS = Gauge("imcluster_login_gateways", "Gateways registered (linked) with this login_server.")


async def handle_metrics(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})
