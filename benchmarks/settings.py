"""What every part of the load benchmark shares: the options of a run and the fixed settings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from db_proxy.passwords import md5_hex

HOST = "127.0.0.1"
PASSWORD_MD5 = md5_hex("bench-password")
BENCH_LOG2_N = 4  # cheap scrypt for thousands of benchmark users; load tests only
LOGIN_TIMEOUT = 15.0
# Every benchmark client is on 127.0.0.1 and sends as fast as it can: the gateway's per-source
# caps and rate limits (msg_server/admission.py, limits.py) would measure themselves instead.
# benchmarks/floods.py measures them.
ONE_ADDRESS_NO_LIMITS = {
    "max_connections_per_source": "10000000",
    "max_unauthenticated_per_source": "10000000",
    "max_unauthenticated": "10000000",
    "msg_rate": "1e9",
    "msg_burst": "1000000000",
    "user_msg_rate": "1e9",
    "user_msg_burst": "1000000000",
    "request_rate": "1e9",
    "request_burst": "1000000000",
    "login_rate_per_source": "1e9",
    "login_burst_per_source": "1000000000",
}


@dataclass
class Options:
    engine: str = "sqlite"
    idle: int = 5000
    discovery: int = 2000
    pairs: int = 50
    messages: int = 200
    window: int = 8
    repeat: int = 3
    concurrency: int = 200
    timeout: float = 300.0
    json_path: Path | None = None
    quick: bool = False
    keep: bool = False
