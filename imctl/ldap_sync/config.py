"""The ``[ldap]`` table: where the directory is and how its entries map to users.

The defaults fit OpenLDAP with inetOrgPerson entries; README.md
("Directory sync") has the settings for Active Directory. The bind password
is never a setting: it comes from ``bind_password_file`` or
``$IMCLUSTER_LDAP_PASSWORD``, so it shows neither in ``ps`` nor in the config.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from common.config import ConfigError, load_config, setting

PASSWORD_ENV = "IMCLUSTER_LDAP_PASSWORD"
MAX_PAGE_SIZE = 1000  # Active Directory's MaxPageSize; OpenLDAP takes more, but a page is held in memory


@dataclass(frozen=True, slots=True)
class LdapConfig:
    """The ``[ldap]`` table, read by ``imctl sync ldap`` only."""

    url: str = setting("", "LDAP server: ldap://HOST[:PORT] or ldaps://HOST[:PORT].")
    bind_dn: str = setting("", "DN to bind as (simple bind); empty: an anonymous bind.")
    bind_password_file: str = setting(
        "", f"File holding the bind password (its first line); empty: ${PASSWORD_ENV}."
    )
    base_dn: str = setting(
        "", "Where users are searched (the whole subtree), e.g. ou=people,dc=example,dc=com."
    )
    user_filter: str = setting("(objectClass=inetOrgPerson)", "LDAP filter of the entries that are users.")
    external_id_attribute: str = setting(
        "entryUUID", "Attribute that never changes for an entry: entryUUID (OpenLDAP), objectGUID (AD)."
    )
    login_attribute: str = setting("uid", "Attribute holding the login name (AD: sAMAccountName).")
    nick_attribute: str = setting("displayName", "Attribute for the nick (shown name); empty: not synced.")
    real_name_attribute: str = setting("cn", "Attribute for the real name; empty: not synced.")
    email_attribute: str = setting("mail", "Attribute for the e-mail address; empty: not synced.")
    tel_attribute: str = setting("telephoneNumber", "Attribute for the telephone; empty: not synced.")
    department_from: str = setting(
        "ou",
        'Departments: "ou" for the OUs of the entry\'s DN below base_dn (nested OUs, nested '
        "departments), or an attribute (departmentNumber, AD department; a/b/c is nested); "
        "empty: departments are not synced.",
    )
    disabled_attribute: str = setting(
        "pwdAccountLockedTime",
        "Attribute that marks a disabled account: userAccountControl (AD, bit 0x2), "
        "else disabled if it has any value (OpenLDAP ppolicy pwdAccountLockedTime); empty: none.",
    )
    disabled_filter: str = setting(
        "", "LDAP filter of disabled users, besides disabled_attribute, e.g. (employeeType=left)."
    )
    page_size: int = setting(500, f"Entries per page of the paged search (1 to {MAX_PAGE_SIZE}).")
    max_entries: int = setting(200_000, "Refuse a directory with more user entries than this.")
    start_tls: bool = setting(False, "Upgrade an ldap:// connection with StartTLS.")
    ca_file: str = setting("", "CA certificates (PEM) to verify the server by; empty: the system's.")
    timeout: float = setting(10.0, "Seconds to connect, and to wait for each answer.")

    def __post_init__(self) -> None:
        if self.url and not self.url.startswith(("ldap://", "ldaps://")):
            raise ConfigError(
                f"ldap.url: expected ldap://HOST[:PORT] or ldaps://HOST[:PORT], got {self.url!r}"
            )
        if not 1 <= self.page_size <= MAX_PAGE_SIZE:
            raise ConfigError(f"ldap.page_size: expected 1 to {MAX_PAGE_SIZE}, got {self.page_size}")
        if self.max_entries < 1:
            raise ConfigError(f"ldap.max_entries: expected at least 1, got {self.max_entries}")
        if self.timeout <= 0:
            raise ConfigError(f"ldap.timeout: expected a positive number, got {self.timeout}")
        if self.start_tls and self.url.startswith("ldaps://"):
            raise ConfigError("ldap.start_tls: an ldaps:// URL is TLS already")
        if not self.external_id_attribute or not self.login_attribute:
            raise ConfigError("ldap: external_id_attribute and login_attribute must be set")

    def ready(self) -> None:
        """ConfigError unless there is enough to search."""
        missing = [key for key in ("url", "base_dn") if not getattr(self, key)]
        if missing:
            raise ConfigError(f"ldap.{missing[0]} is not set (the [ldap] table of the config)")

    def password(self, environ: dict[str, str] | None = None) -> str:
        """The bind password: the file's first line, else the environment, else empty."""
        if self.bind_password_file:
            try:
                lines = Path(self.bind_password_file).read_text().splitlines()
            except OSError as exc:
                raise ConfigError(f"ldap.bind_password_file: cannot read it: {exc.strerror}") from None
            return lines[0] if lines else ""
        return (environ if environ is not None else os.environ).get(PASSWORD_ENV, "")


def load_ldap_config(path: Path | None) -> LdapConfig:
    return load_config(LdapConfig, "ldap", path)
