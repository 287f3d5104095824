"""The pieces FCM and APNs share, without a server: Retry-After, combining devices' results,
the bearer token's cache, what a notification shows."""

from __future__ import annotations

import asyncio
import email.utils
from pathlib import Path

import pytest

from common.config import ConfigError
from db_proxy.offline_push.bearer import Bearer
from db_proxy.offline_push.config import OfflinePushConfig
from db_proxy.offline_push.http import retry_after, tls_context
from db_proxy.offline_push.mobile import BODY_CHARS, NEUTRAL_BODY, alert, combine
from db_proxy.offline_push.provider import Outcome, Result
from tests.offline_push_providers.conftest import Clock, notification

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, None),
        ("7", 7.0),
        (" 120 ", 120.0),
        (email.utils.formatdate(NOW + 30, usegmt=True), 30.0),
        (email.utils.formatdate(NOW - 30, usegmt=True), 0.0),  # already past: now
        ("soon", None),
        ("-5", None),
        ("1.5", None),  # delta-seconds are whole
    ],
)
def test_retry_after(header: str | None, seconds: float | None) -> None:
    assert retry_after(header, now=NOW) == seconds


def test_unreadable_ca_file_names_the_setting(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("not a certificate")
    with pytest.raises(ConfigError, match=r"offline_push\.ca_file"):
        tls_context(OfflinePushConfig(ca_file=str(tmp_path / "ca.pem")))


def _result(outcome: Outcome, *stale: str, after: float | None = None) -> Result:
    return Result(outcome, outcome.value, retry_after=after, stale_tokens=stale)


def test_combined_delivered_if_any_device_got_it() -> None:
    combined = combine([_result(Outcome.RETRY), _result(Outcome.REJECTED, "old"), _result(Outcome.DELIVERED)])
    assert (combined.outcome, combined.stale_tokens) == (Outcome.DELIVERED, ("old",))


def test_combined_retry_at_the_latest_time_asked() -> None:
    combined = combine(
        [_result(Outcome.RETRY, after=3), _result(Outcome.RETRY), _result(Outcome.RETRY, after=9)]
    )
    assert (combined.outcome, combined.retry_after) == (Outcome.RETRY, 9)
    assert combine([_result(Outcome.RETRY), _result(Outcome.REJECTED, "old")]).stale_tokens == ("old",)


def test_combined_rejected_only_if_no_device_may_get_it() -> None:
    combined = combine([_result(Outcome.REJECTED, "a"), _result(Outcome.REJECTED, "b")])
    assert (combined.outcome, combined.stale_tokens) == (Outcome.REJECTED, ("a", "b"))
    assert combine([]).outcome is Outcome.REJECTED


def test_alert_neutral_unless_text_given_and_cut_to_fit() -> None:
    assert alert(notification()) == ("alice", NEUTRAL_BODY)
    _, body = alert(notification(text="x" * 5000))
    assert len(body) == BODY_CHARS
    assert body.endswith("…")


class Maker:
    """Makes tokens "t1", "t2", ... each valid ``lifetime`` seconds; ``gate`` holds each making."""

    def __init__(self, lifetime: float = 100) -> None:
        self.made = 0
        self.lifetime = lifetime
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self) -> tuple[str, float]:
        self.entered.set()
        await self.gate.wait()
        self.made += 1
        return f"t{self.made}", self.lifetime


async def test_bearer_made_once_for_concurrent_callers() -> None:
    maker = Maker()
    maker.gate.clear()
    bearer = Bearer(maker, Clock())
    waiting = [asyncio.create_task(bearer.get()) for _ in range(4)]
    # The tasks run in the order they were made, before this one wakes: when the first is
    # making the token, the other three are waiting for it.
    await asyncio.wait_for(maker.entered.wait(), 5)
    maker.gate.set()
    assert await asyncio.wait_for(asyncio.gather(*waiting), 5) == ["t1"] * 4
    assert maker.made == 1


async def test_bearer_kept_for_its_lifetime() -> None:
    clock, maker = Clock(), Maker(lifetime=100)
    bearer = Bearer(maker, clock)
    assert await bearer.get() == "t1"
    clock.now += 99.9
    assert await bearer.get() == "t1"
    clock.now += 0.1
    assert await bearer.get() == "t2"


async def test_bearer_refused_renews_once_whoever_reports_it() -> None:
    bearer = Bearer(Maker(), Clock())
    assert await bearer.get() == "t1"
    bearer.refused("t1")
    assert await bearer.get() == "t2"
    bearer.refused("t1")  # a late report about the old token: "t2" stays
    assert await bearer.get() == "t2"


async def test_bearer_use_tries_again_once_with_a_new_token() -> None:
    bearer = Bearer(Maker(), Clock())
    seen: list[str] = []

    async def request(token: str) -> str:
        seen.append(token)
        return "refused"

    assert await bearer.use(request, lambda answer: answer == "refused") == "refused"
    assert seen == ["t1", "t2"]
