"""What every part of the load benchmark shares: the options of a run and the fixed settings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from db_proxy.passwords import md5_hex

HOST = "127.0.0.1"
PASSWORD_MD5 = md5_hex("bench-password")
BENCH_LOG2_N = 4  # cheap scrypt for thousands of benchmark users; load tests only
LOGIN_TIMEOUT = 15.0


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
