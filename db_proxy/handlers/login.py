"""Login validation for the gateways: the password check, its cache and the
failed-login throttle. Reads users from the directory store only."""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor

from common.commands import Rpcs
from common.errors import Overloaded
from common.link import Link
from common.log import address_of
from common.metrics import LOGINS
from common.pb import base_pb2, internal_pb2
from common.rpc import Commands
from db_proxy import metrics
from db_proxy.cache import LoginCache, ThrottleCounters
from db_proxy.handlers.replies import user_info
from db_proxy.passwords import verify_or_waste
from db_proxy.recipients import KnownUsers
from db_proxy.storage import schema
from db_proxy.storage.model import Store, User, is_text
from db_proxy.user_rows import UserRows

log = logging.getLogger("db.login")
LOGINS_OK = LOGINS.labels("ok")  # bound once: the hot path
CACHE_HIT, CACHE_MISS = metrics.LOGIN_CACHE.labels("hit"), metrics.LOGIN_CACHE.labels("miss")

# A TeamTalk client sends the md5 hex of the password (32 characters); a
# longer one matches nobody, and is refused before it costs a hash.
MAX_PASSWORD_MD5 = 64


class LoginHandlers:
    def __init__(
        self,
        directory: Store,
        known: KnownUsers,
        cache: LoginCache,
        hash_pool: Executor,
        max_pending_logins: int,
        throttle: ThrottleCounters,
        rows: UserRows | None = None,
    ) -> None:
        self.directory = directory
        self.known = known  # a user who logs in exists: the message path need not ask
        self.cache = cache
        self.throttle = throttle
        self.hash_pool = hash_pool
        self.max_pending_logins = max_pending_logins
        self.pending_logins = 0
        # The users' rows, kept a while (db_proxy/user_rows.py); without one, every login reads it.
        self.rows = rows if rows is not None else UserRows(directory, ttl=0)

    def commands(self) -> Commands:
        """The commands a gateway may send for this part of db_proxy."""
        return Commands().rpc(Rpcs.DB_LOGIN, self.login)

    async def login(self, link: Link, req: internal_pb2.DbLoginReq) -> internal_pb2.DbLoginRes:
        # A proto2 string that is not UTF-8 arrives as bytes: no user has
        # that name or that password. Such a name is counted under one key.
        name = req.user_name.strip() if is_text(req.user_name) else "\0not utf-8"
        md5 = req.password_md5 if is_text(req.password_md5) else ""
        plausible = 0 < len(name) <= schema.USER_TEXT_LIMITS["name"]
        plausible = plausible and is_text(req.password_md5) and len(md5) <= MAX_PASSWORD_MD5
        source = address_of(req.peer if is_text(req.peer) else "?")
        # One Redis command: the throttle's counters and the verified-password entry.
        checked = await self.throttle.check_login(source, name, self.cache, md5, time.time())
        if checked.refusal is not None:
            # Inside a wait: refused before any lookup or hash, and not counted.
            return _refused(checked.refusal.message)
        keys = checked.keys
        # Running until answered: parallel guesses count against the limits meanwhile
        # (login_throttle.InFlight), so they cannot all pass before the first is counted.
        self.throttle.in_flight.begin(keys)
        token: str | None = None
        try:
            user: User | None = None
            if plausible:
                user = await self.rows.by_name(name)
                ok, token = await self._password_matches(user, md5, checked.verified)
            else:
                ok = False  # no user has that name, or that password: no hash needed to know
            if not ok or user is None:
                await self.throttle.failed(keys, checked.attempt, time.time())
        finally:
            self.throttle.in_flight.end(keys)
        if not ok or user is None:
            LOGINS.labels("refused").inc()
            log.debug("login refused for %r from %s", name[:80], source)
            return _refused("wrong user name or password")
        LOGINS_OK.inc()
        await self.throttle.login_succeeded(checked, token, self.cache, time.time())
        self.known.remember(user.id)
        return internal_pb2.DbLoginRes(result_code=base_pb2.REFUSE_REASON_NONE, user_info=user_info(user))

    async def _password_matches(
        self, user: User | None, md5: str, verified: object
    ) -> tuple[bool, str | None]:
        """Whether ``md5`` is ``user``'s password, and the verified-password entry to write (None:
        none, the cache had it); the same scrypt for a user who does not exist or cannot log in
        (see passwords.dummy_hash). ``verified``: the cache's entry for this name and password."""
        usable = user is not None and not user.disabled and user.password_hash.startswith("scrypt$")
        if user is not None and usable and self.cache.matches(verified, user.id, user.password_hash):
            CACHE_HIT.inc()
            return True, None
        if usable:
            CACHE_MISS.inc()
        if self.pending_logins >= self.max_pending_logins:
            raise Overloaded("too many logins waiting for a hash")
        self.pending_logins += 1
        try:
            loop = asyncio.get_running_loop()
            stored = user.password_hash if user is not None and usable else None
            ok = await loop.run_in_executor(self.hash_pool, verify_or_waste, md5, stored)
        finally:
            self.pending_logins -= 1
        if ok and user is not None:
            return True, self.cache.token(user.id, user.password_hash)
        return ok, None


def _refused(reason: str) -> internal_pb2.DbLoginRes:
    return internal_pb2.DbLoginRes(
        result_code=base_pb2.REFUSE_REASON_DB_VALIDATE_FAILED, result_string=reason
    )
