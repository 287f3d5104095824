"""Every metric the Grafana dashboard and the Prometheus alert rules use exists.

A real cluster (TLS on, with file_server and msfs) is scraped: each name an
expression reads must be exposed by some server (a counter ``x`` as
``x_total``, a histogram as ``x_bucket``/``x_sum``/``x_count``). A renamed
metric breaks this test instead of a panel, silently, in production.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path

import pytest
import yaml

from imctl.ports import plan_ports
from tests.e2e.conftest import Cluster
from tests.ops.promql import metric_names

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "scripts" / "grafana" / "imcluster.json"
ALERTS = ROOT / "scripts" / "prometheus" / "alerts.yml"
SCRAPE = ROOT / "scripts" / "prometheus" / "prometheus.yml"
SUFFIXES = ("_total", "_bucket", "_sum", "_count")
FROM_PROMETHEUS = {"up"}  # made by Prometheus for each target, not by a server


def dashboard_exprs() -> list[str]:
    def walk(panels: list[dict[str, object]]) -> list[str]:
        found = []
        for panel in panels:
            for target in panel.get("targets", []):  # type: ignore[attr-defined]
                found.append(target["expr"])
            found += walk(panel.get("panels", []))  # type: ignore[arg-type]
        return found

    return walk(json.loads(DASHBOARD.read_text())["panels"])


def rule_exprs() -> list[str]:
    document = yaml.safe_load(ALERTS.read_text())
    return [rule["expr"] for group in document["groups"] for rule in group["rules"]]


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('up{job=~"imcluster.*"} == 0', {"up"}),
        (
            'histogram_quantile(0.99, sum by (le) (rate(imcluster_x_seconds_bucket{job=~"$job"}[5m]))) > 2',
            {"imcluster_x_seconds_bucket"},
        ),
        (
            "sum(rate(a_total[$__rate_interval])) / sum(rate(b_count[1m])) by (instance)",
            {"a_total", "b_count"},
        ),
        (
            "imcluster_a - time() < 14 * 86400 and on(instance) imcluster_b offset 5m",
            {"imcluster_a", "imcluster_b"},
        ),
        ('rate(x{reason!="no_session", y=~"a|b"}[5m]) > 1e3 or vector(0)', {"x"}),
        (
            "max without (worker) (imcluster_q) unless ignoring(job) group_left(le) other",
            {"imcluster_q", "other"},
        ),
    ],
)
def test_promql_names_are_extracted(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_the_files_parse_and_use_metrics() -> None:
    rules = yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]
    assert {"ImclusterServerDown", "ImclusterSavesRefused", "ImclusterGatewayNearFull"} <= {
        r["alert"] for r in rules
    }
    for expr in [*dashboard_exprs(), *rule_exprs()]:
        assert metric_names(expr), expr


def test_the_scrape_example_names_imctl_ups_metrics_ports() -> None:
    config = yaml.safe_load(SCRAPE.read_text())
    listed = {t for job in config["scrape_configs"] for c in job["static_configs"] for t in c["targets"]}
    plan = plan_ports(8000, 8080, 2, 1, ["db-1"], files=True)
    assert listed == {f"127.0.0.1:{p.port}" for p in plan if p.key == "metrics_port"}
    assert config["rule_files"] == ["alerts.yml"]


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def exposed_names(text: str) -> set[str]:
    """Sample names and the families of ``# TYPE`` lines (a labelled metric with no series yet)."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            names.add(line.split()[2])
        elif line and not line.startswith("#"):
            names.add(line.split("{", 1)[0].split(" ", 1)[0])
    return names


def is_exposed(name: str, exposed: set[str]) -> bool:
    return name in exposed or any(
        name.endswith(suffix) and name.removesuffix(suffix) in exposed for suffix in SUFFIXES
    )


async def test_every_metric_of_the_dashboard_and_rules_is_exposed(tls_cluster: Cluster) -> None:
    ports = [s.info["metrics_port"] for s in tls_cluster.local.servers]
    assert {s.kind for s in tls_cluster.local.servers} == {"login", "msg", "route", "db", "file", "msfs"}
    exposed: set[str] = set()
    for port in ports:
        assert isinstance(port, int)
        exposed |= exposed_names(await asyncio.to_thread(_scrape, port))
    used = {name for expr in [*dashboard_exprs(), *rule_exprs()] for name in metric_names(expr)}
    assert len(used) > 30
    missing = sorted(name for name in used - FROM_PROMETHEUS if not is_exposed(name, exposed))
    assert missing == []
