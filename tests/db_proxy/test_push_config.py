"""db_proxy's delivery settings: defaults, and what is refused at load."""

from __future__ import annotations

import pytest

from common.config import ConfigError
from db_proxy.config import DbProxyConfig


def test_defaults() -> None:
    config = DbProxyConfig()
    assert config.delivery_log == "memory://"
    assert (config.delivery_lease_ttl, config.push_timeout, config.push_give_up) == (1.5, 1.0, 10.0)


@pytest.mark.parametrize(
    "bad",
    [
        {"delivery_log": "kafka://broker:9092"},
        {"delivery_log": ""},
        {"delivery_lease_ttl": 0.0},
        {"delivery_lease_ttl": 120.0},
        {"push_timeout": 0.0},
        {"push_timeout": 5.0, "push_give_up": 2.0},  # giving up before one try may end
    ],
)
def test_bad_delivery_settings_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        DbProxyConfig(**bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "url", ["memory://", "redis://127.0.0.1:6379/0?partitions=16", "rediss://h:6380/0", "NATS://h:4222"]
)
def test_every_backend_scheme_is_accepted(url: str) -> None:
    assert DbProxyConfig(delivery_log=url).delivery_log == url
