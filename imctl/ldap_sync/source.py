"""Reading the directory with ldap3: bind, paged search, the mapped attributes only.

Blocking, like the rest of imctl. Every wait is bounded (``ldap.timeout``
to connect and per answer), every page too (``ldap.page_size``), and so is
the whole read (``ldap.max_entries``). Errors are the taxonomy's
(common/errors.py): Unavailable (no answer), Forbidden (the bind was
refused), InvalidArgument (the server refused the base or a filter); the
bind password appears in none of them.
"""

from __future__ import annotations

import math
import re
import ssl
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from common.errors import Forbidden, InvalidArgument, Unavailable
from imctl.ldap_sync import mapping
from imctl.ldap_sync.config import LdapConfig
from imctl.ldap_sync.ldap3_import import exceptions as ldap_errors
from imctl.ldap_sync.ldap3_import import ldap3
from imctl.ldap_sync.plan import DirectoryEntry

PAGED_RESULTS = "1.2.840.113556.1.4.319"  # RFC 2696 simple paged results control
#: LDAP result codes that say the request was wrong, not the server down.
BAD_REQUEST = {"noSuchObject", "invalidDNSyntax", "protocolError", "filterError", "undefinedAttributeType"}


@dataclass(frozen=True, slots=True)
class DirectoryRead:
    entries: list[DirectoryEntry]
    pages: int


def server_of(config: LdapConfig) -> ldap3.Server:
    parts = urlsplit(config.url)
    secure = parts.scheme == "ldaps"
    tls = None
    if secure or config.start_tls:
        tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=config.ca_file or None)
    return ldap3.Server(
        parts.hostname or "localhost",
        port=parts.port or (636 if secure else 389),
        use_ssl=secure,
        tls=tls,
        get_info=ldap3.NONE,  # no schema read: the raw values are mapped here
        connect_timeout=config.timeout,
    )


class LdapSource:
    """One bound connection to the directory; use as a context manager."""

    def __init__(self, config: LdapConfig, password: str) -> None:
        config.ready()
        self.config = config
        self._password = password
        self.conn: ldap3.Connection | None = None

    def __enter__(self) -> LdapSource:
        self.conn = self._bind()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.conn is not None:
            _close(self.conn)
            self.conn = None

    def _bind(self) -> ldap3.Connection:
        config = self.config
        conn = ldap3.Connection(
            server_of(config),
            user=config.bind_dn or None,
            password=self._password or None,
            authentication=ldap3.SIMPLE if config.bind_dn else ldap3.ANONYMOUS,
            auto_bind=ldap3.AUTO_BIND_NONE,
            read_only=True,
            # AD answers a search from the domain's top with referrals to its DNS zones:
            # chasing them would bind elsewhere with these credentials; they hold no users.
            auto_referrals=False,
            receive_timeout=math.ceil(config.timeout),  # ldap3 packs it as whole seconds
            raise_exceptions=False,
        )
        try:
            return self._open(conn)
        except BaseException:
            _close(conn)
            raise

    def _open(self, conn: ldap3.Connection) -> ldap3.Connection:
        config = self.config
        try:
            # ldap3 checks the certificate's name with ssl.match_hostname, which Python 3.11
            # deprecates (3.12 drops it, and ldap3 then uses its own copy): the check still runs.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                conn.open()
                if config.start_tls and not conn.start_tls():
                    raise Unavailable(f"StartTLS refused by {config.url}: {conn.result.get('description')}")
            if not conn.bind():
                description = conn.result.get("description", "refused")
                raise Forbidden(f"LDAP bind as {config.bind_dn or '(anonymous)'} refused: {description}")
        except ldap_errors.LDAPSocketOpenError as exc:
            raise Unavailable(f"cannot reach the LDAP server at {config.url}: {_reason(exc)}") from None
        except (ldap_errors.LDAPSocketReceiveError, ldap_errors.LDAPSessionTerminatedByServerError) as exc:
            raise Unavailable(f"the LDAP server at {config.url} did not answer: {_reason(exc)}") from None
        except (ldap_errors.LDAPStartTLSError, ldap_errors.LDAPCertificateError) as exc:
            raise Unavailable(f"TLS with {config.url} failed: {_reason(exc)}") from None
        return conn

    def _pages(self, search_filter: str, attributes: list[str]) -> Iterator[list[dict[str, Any]]]:
        """The search's entries, a page at a time (at most max_entries in all)."""
        assert self.conn is not None, "use LdapSource as a context manager"
        config = self.config
        cookie: bytes | None = None
        seen = 0
        max_pages = config.max_entries // config.page_size + 2
        for _ in range(max_pages):
            try:
                self.conn.search(
                    config.base_dn,
                    search_filter,
                    ldap3.SUBTREE,
                    attributes=attributes,
                    paged_size=config.page_size,
                    paged_cookie=cookie,
                    time_limit=int(config.timeout) + 1,
                )
            except ldap_errors.LDAPInvalidFilterError:
                raise InvalidArgument(f"bad LDAP filter {search_filter!r}") from None
            except ldap_errors.LDAPCommunicationError as exc:
                raise Unavailable(f"the LDAP server at {config.url} did not answer: {_reason(exc)}") from None
            result = self.conn.result
            if result.get("result", 0) != 0:
                description = str(result.get("description", ""))
                message = (
                    f"LDAP search under {config.base_dn!r} failed: {description} {result.get('message', '')}"
                )
                if description == "sizeLimitExceeded":
                    message += (
                        " (the server's limit for this account is below the directory's size; "
                        "OpenLDAP: limits dn.exact=BIND_DN size.prtotal=unlimited)"
                    )
                raise (
                    InvalidArgument if description in BAD_REQUEST | {"sizeLimitExceeded"} else Unavailable
                )(message.strip())
            page = [r for r in self.conn.response or [] if r.get("type") == "searchResEntry"]
            seen += len(page)
            if seen > config.max_entries:
                raise InvalidArgument(
                    f"the directory has more than ldap.max_entries={config.max_entries} user entries"
                )
            yield page
            control = result.get("controls", {}).get(PAGED_RESULTS, {})
            cookie = control.get("value", {}).get("cookie") or None
            if not cookie:
                return
        raise Unavailable("the LDAP server kept the paged search going past max_entries")

    def read(self) -> DirectoryRead:
        """Every user entry, mapped; the disabled_filter's matches marked disabled."""
        config = self.config
        disabled: set[str] = set()
        if config.disabled_filter:
            both = f"(&{_wrapped(config.user_filter)}{_wrapped(config.disabled_filter)})"
            for page in self._pages(both, [config.external_id_attribute]):
                for row in page:
                    disabled.add(
                        mapping.external_id(row.get("raw_attributes", {}), config.external_id_attribute)
                    )
        entries: list[DirectoryEntry] = []
        pages = 0
        for page in self._pages(_wrapped(config.user_filter), mapping.wanted_attributes(config)):
            pages += 1
            for row in page:
                raw = row.get("raw_attributes", {})
                eid = mapping.external_id(raw, config.external_id_attribute)
                entries.append(
                    mapping.to_entry(str(row.get("dn", "")), raw, config, bool(eid) and eid in disabled)
                )
        return DirectoryRead(entries, pages)


def _close(conn: ldap3.Connection) -> None:
    """Close the connection's socket whatever state it is in (ldap3 keeps the
    socket of a refused connect or bind open otherwise)."""
    try:
        conn.unbind()
    except ldap_errors.LDAPException:
        pass
    sock = getattr(conn, "socket", None)
    if sock is not None:
        sock.close()


def _wrapped(search_filter: str) -> str:
    text = search_filter.strip()
    return text if text.startswith("(") else f"({text})"


def _reason(exc: BaseException) -> str:
    """ldap3's message without its nesting: "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed
    ..." rather than the repr of a tuple of the repr of an exception."""
    text = str(exc)
    ssl_error = re.search(r"\[SSL: [^\]]+\][^'\"(]*", text)
    if ssl_error:
        return ssl_error.group(0).strip()
    return text.split(" - ")[-1] or type(exc).__name__
