"""login_server's metrics (served by common.metrics on login_server.metrics_port)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

DISCOVERIES = Counter("imcluster_login_discoveries", "GET /msg_server answers by result.", ["result"])
GATEWAYS = Gauge("imcluster_login_gateways", "Gateways registered (linked) with this login_server.")
