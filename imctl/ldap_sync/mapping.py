"""LDAP entries (a DN and raw attribute values) to :class:`DirectoryEntry`.

No I/O: the ldap3 adapter (:mod:`.source`) hands the values over as the
server sent them (bytes), and the rules of the ``[ldap]`` table decide what
they mean. Attribute names match in any case, as LDAP's do.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence

from imctl.ldap_sync.config import LdapConfig
from imctl.ldap_sync.ldap3_import import exceptions, parse_dn
from imctl.ldap_sync.plan import DirectoryEntry, Path

RawAttributes = Mapping[str, Sequence[bytes]]
ACCOUNT_DISABLE = 0x2  # AD userAccountControl's ACCOUNTDISABLE bit
_ESCAPE = re.compile(r"\\([0-9A-Fa-f]{2}|.)")


def wanted_attributes(config: LdapConfig) -> list[str]:
    """The attributes a search asks for: the mapped ones only."""
    names = [
        config.external_id_attribute,
        config.login_attribute,
        config.nick_attribute,
        config.real_name_attribute,
        config.email_attribute,
        config.tel_attribute,
        config.disabled_attribute,
    ]
    if config.department_from and config.department_from.lower() != "ou":
        names.append(config.department_from)
    return list(dict.fromkeys(n for n in names if n))


def synced_fields(config: LdapConfig) -> frozenset[str]:
    """The profile fields that have an attribute (the others are left as they are here)."""
    mapped = {
        "nick": config.nick_attribute,
        "real_name": config.real_name_attribute,
        "email": config.email_attribute,
        "tel": config.tel_attribute,
    }
    return frozenset(field for field, attribute in mapped.items() if attribute)


def _unescape(value: str) -> str:
    """An RDN value without its DN escapes (``\\,`` and ``\\2C`` are both a comma)."""

    def one(match: re.Match[str]) -> str:
        text = match.group(1)
        return chr(int(text, 16)) if len(text) == 2 else text

    return _ESCAPE.sub(one, value)


def _rdns(dn: str) -> list[tuple[str, str]]:
    try:
        return [(attr.lower(), _unescape(value)) for attr, value, _sep in parse_dn(dn)]
    except exceptions.LDAPInvalidDnError:
        return []


def ou_path(dn: str, base_dn: str) -> Path:
    """The OUs between ``base_dn`` and the entry, top first: ``uid=x,ou=dev,ou=eng,<base>``
    is ("eng", "dev"). Other RDNs (AD's ``CN=Users``) are no department."""
    rdns, base = _rdns(dn), _rdns(base_dn)
    below = (
        rdns[1 : len(rdns) - len(base)] if base and _same(rdns[len(rdns) - len(base) :], base) else rdns[1:]
    )
    return tuple(value for attr, value in reversed(below) if attr == "ou")


def _same(a: list[tuple[str, str]], b: list[tuple[str, str]]) -> bool:
    return [(k, v.lower()) for k, v in a] == [(k, v.lower()) for k, v in b]


def _values(attributes: RawAttributes, name: str) -> Sequence[bytes]:
    if not name:
        return ()
    lowered = name.lower()
    for key, values in attributes.items():
        if key.lower() == lowered:
            return values
    return ()


def _text(attributes: RawAttributes, name: str) -> str:
    values = _values(attributes, name)
    return values[0].decode("utf-8", "replace").strip() if values else ""


def external_id(attributes: RawAttributes, name: str) -> str:
    """The entry's id as text: AD's objectGUID (16 bytes, little-endian fields) in its usual
    form, anything else as the UTF-8 text it is (OpenLDAP's entryUUID)."""
    values = _values(attributes, name)
    if not values:
        return ""
    raw = values[0]
    if name.lower() == "objectguid" and len(raw) == 16:
        return str(uuid.UUID(bytes_le=bytes(raw)))
    return raw.decode("utf-8", "replace").strip().lower()


def is_disabled(attributes: RawAttributes, name: str) -> bool:
    """``userAccountControl`` by its ACCOUNTDISABLE bit; any other attribute by having a value."""
    values = _values(attributes, name)
    if not values:
        return False
    if name.lower() == "useraccountcontrol":
        try:
            return bool(int(values[0]) & ACCOUNT_DISABLE)
        except ValueError:
            return False
    return True


def department(dn: str, attributes: RawAttributes, config: LdapConfig) -> Path:
    source = config.department_from
    if not source:
        return ()
    if source.lower() == "ou":
        return ou_path(dn, config.base_dn)
    return tuple(part.strip() for part in _text(attributes, source).split("/") if part.strip())


def to_entry(
    dn: str, attributes: RawAttributes, config: LdapConfig, disabled: bool = False
) -> DirectoryEntry:
    """One entry; ``disabled``: it matched the disabled_filter."""
    return DirectoryEntry(
        external_id=external_id(attributes, config.external_id_attribute),
        login=_text(attributes, config.login_attribute),
        dn=dn,
        nick=_text(attributes, config.nick_attribute),
        real_name=_text(attributes, config.real_name_attribute),
        email=_text(attributes, config.email_attribute),
        tel=_text(attributes, config.tel_attribute),
        department=department(dn, attributes, config),
        disabled=disabled or is_disabled(attributes, config.disabled_attribute),
    )
