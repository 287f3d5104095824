"""The HTTP side every push provider shares: the client, and the failures that are not answers.

One :func:`client` per provider, built from ``[offline_push]``: its TLS trust
(``ca_file``, else the system's store: what the real services' certificates
chain to, and what a test's local CA replaces) and its timeout, so no request
to a push service can wait longer than ``offline_push.timeout``.
"""

from __future__ import annotations

import email.utils
import ssl
import time

import httpx

from common.config import ConfigError
from db_proxy.offline_push.config import OfflinePushConfig
from db_proxy.offline_push.provider import Outcome, Result


def tls_context(config: OfflinePushConfig) -> ssl.SSLContext:
    """The CAs a push service's certificate must chain to (host names are checked)."""
    try:
        return ssl.create_default_context(cafile=config.ca_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"offline_push.ca_file: cannot load {config.ca_file}: {exc}") from None


def client(
    config: OfflinePushConfig, *, http2: bool = False, headers: dict[str, str] | None = None
) -> httpx.AsyncClient:
    """``http2``: HTTP/2 only (APNs serves nothing else); otherwise HTTP/1.1.

    Pooled: connections are reused, at most ``concurrency`` of them (the
    runner's requests in flight to one provider).
    """
    return httpx.AsyncClient(
        verify=tls_context(config),
        timeout=httpx.Timeout(config.timeout),
        http1=not http2,
        http2=http2,
        limits=httpx.Limits(max_connections=config.concurrency, max_keepalive_connections=config.concurrency),
        headers=headers,
        follow_redirects=False,  # a push API never redirects; one that does is misconfigured
    )


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date (RFC 9110 10.2.3).

    None when absent or unreadable (the queue's own backoff applies); never negative.
    ``now``: unix seconds, for an HTTP date (defaults to the wall clock).
    """
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # an HTTP date is GMT, even one written without the zone
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def is_transient(status: int) -> bool:
    """Worth trying again later: throttled, or the service failing (any 5xx, 500 and 503 above all)."""
    return status == 429 or 500 <= status <= 599


def transient(response: httpx.Response, detail: str) -> Result:
    """A RETRY for a throttled or failing service, at the time it asked for if it did."""
    return Result(
        Outcome.RETRY,
        f"{detail}: HTTP {response.status_code}",
        retry_after=retry_after(response.headers.get("retry-after")),
    )


def unreachable(exc: httpx.HTTPError, detail: str) -> Result:
    """No answer (refused, reset, timed out, TLS failed): the service may be back later."""
    return Result(Outcome.RETRY, f"{detail}: {type(exc).__name__}: {exc}")
