"""The rate limits on a fake clock: buckets, what each command costs, bounded state."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from common.commands import Cmd
from msg_server.limits import Bucket, RateLimits, Rates

RATES = Rates(
    msg_rate=2.0,
    msg_burst=5,
    request_rate=10.0,
    request_burst=20,
    user_msg_rate=3.0,
    user_msg_burst=8,
    profile_rate=0.5,
    profile_burst=2,
)


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(0.1, 1000.0),
    burst=st.integers(1, 200),
    gaps=st.lists(st.floats(0.0, 2.0), min_size=1, max_size=300),
)
def test_a_bucket_never_allows_more_than_burst_plus_rate_times_the_window(
    rate: float, burst: int, gaps: list[float]
) -> None:
    bucket = Bucket(rate, burst, 0.0)
    now = 0.0
    allowed: list[float] = []
    for gap in gaps:
        now += gap
        if bucket.allow(now):
            allowed.append(now)
    # Any window [allowed[i], allowed[j]]: at most burst + rate * its length.
    for i in range(len(allowed)):
        for j in range(i, len(allowed)):
            assert j - i + 1 <= burst + rate * (allowed[j] - allowed[i]) + 1e-6


def test_a_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    bucket = Bucket(2.0, 3, 0.0)
    assert [bucket.allow(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.allow(0.5) and not bucket.allow(0.5)
    assert sum(bucket.allow(100.0) for _ in range(10)) == 3  # a long pause gives burst, not more


def test_messages_are_limited_per_connection_and_per_user() -> None:
    limits: RateLimits[str] = RateLimits(RATES)
    limits.logged_in("a", 7, 0.0)
    limits.logged_in("b", 7, 0.0)
    first = [limits.check("a", Cmd.MSG_DATA, 0.0) for _ in range(6)]
    assert first == [None] * 5 + ["messages"]
    # The user's bucket (8) had 5 taken by connection a: b gets 3, then the user limit.
    second = [limits.check("b", Cmd.MSG_DATA, 0.0) for _ in range(4)]
    assert second == [None] * 3 + ["user_messages"]
    # Another user is not affected.
    limits.logged_in("c", 8, 0.0)
    assert limits.check("c", Cmd.MSG_DATA, 0.0) is None


def test_requests_of_any_command_are_limited_but_heartbeats_never() -> None:
    limits: RateLimits[str] = RateLimits(RATES)
    results = [limits.check("a", Cmd.USERS_INFO_REQ, 0.0) for _ in range(21)]
    assert results[:20] == [None] * 20 and results[20] == "requests"
    assert all(limits.check("a", Cmd.HEARTBEAT, 0.0) is None for _ in range(1000))
    assert limits.check("a", Cmd.USERS_INFO_REQ, 0.1) is None  # 10/s: one more after 0.1 s


def test_profile_changes_are_limited_per_user() -> None:
    limits: RateLimits[str] = RateLimits(RATES)
    limits.logged_in("a", 7, 0.0)
    limits.logged_in("b", 7, 0.0)
    assert limits.check("a", Cmd.CHANGE_SIGN_INFO_REQ, 0.0) is None
    assert limits.check("b", Cmd.CHANGE_AVATAR_REQ, 0.0) is None
    assert limits.check("a", Cmd.CHANGE_AVATAR_REQ, 0.0) == "profile"
    assert limits.check("b", Cmd.CHANGE_SIGN_INFO_REQ, 2.0) is None  # 0.5/s: one in 2 s


def test_state_goes_with_the_connections() -> None:
    limits: RateLimits[int] = RateLimits(RATES)
    for key in range(100):
        limits.check(key, Cmd.USERS_INFO_REQ, 0.0)
        limits.logged_in(key, key % 10 + 1, 0.0)
    assert limits.sizes() == (100, 10)
    for key in range(95):
        limits.gone(key)
    assert limits.sizes() == (5, 5)
    for key in range(95, 100):
        limits.gone(key)
        limits.gone(key)  # twice: no harm
    assert limits.sizes() == (0, 0)


def test_a_user_reconnecting_does_not_get_a_fresh_bucket_while_another_connection_holds_it() -> None:
    limits: RateLimits[str] = RateLimits(RATES)
    limits.logged_in("a", 7, 0.0)
    limits.logged_in("b", 7, 0.0)
    for _ in range(2):
        limits.check("a", Cmd.CHANGE_SIGN_INFO_REQ, 0.0)
    limits.gone("a")
    limits.logged_in("c", 7, 0.0)
    assert limits.check("c", Cmd.CHANGE_SIGN_INFO_REQ, 0.0) == "profile"


def test_logins_are_limited_per_source_address_and_the_addresses_kept_are_bounded() -> None:
    import dataclasses

    import msg_server.limits as limits_module

    rates = dataclasses.replace(RATES, login_rate=1.0, login_burst=3)
    limits: RateLimits[int] = RateLimits(rates)
    # One address reconnecting for every try: each connection is new, the address is not.
    verdicts = [limits.check(i, Cmd.LOGIN_REQ, 0.0, "10.0.0.9") for i in range(5)]
    assert verdicts == [None, None, None, "logins", "logins"]
    assert limits.check(100, Cmd.LOGIN_REQ, 0.0, "10.0.0.10") is None  # another address: its own
    assert limits.check(101, Cmd.LOGIN_REQ, 1.0, "10.0.0.9") is None  # a token back after 1 s
    for i in range(limits_module.MAX_SOURCES + 10):
        assert limits.check(1000 + i, Cmd.LOGIN_REQ, 2.0, f"a{i}") is None
        limits.gone(1000 + i)
    assert len(limits._sources) == limits_module.MAX_SOURCES
    assert limits.check(1, Cmd.LOGIN_REQ, 2.0, "10.0.0.9") is None  # forgotten: a full bucket again
