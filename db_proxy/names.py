"""The names TeamTalk clients show and search by, worked out once per user.

TeamTalk's clients show ``user_real_name`` (the login name) and
``user_nick_name`` (the display name), and search the contact list by
``user_domain``: a key typed on a Latin keyboard, the pinyin of a Chinese
name. The key is computed when a user is created, imported or its nick
changes, and stored in ``users.domain``, so reading a user costs nothing.

pypinyin loads its dictionaries (tens of MB) on import: it is imported on
the first Chinese name only, so a cluster of Latin names never pays for it.
"""

from __future__ import annotations

import re

# CJK Unified Ideographs, extension A and the compatibility block: what pypinyin has readings for.
_HAN = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_SPACE = re.compile(r"\s+")
# users.domain's length (schema.USER_TEXT_LIMITS; not imported: storage imports this module).
DOMAIN_LIMIT = 64


def has_han(text: str) -> bool:
    return _HAN.search(text) is not None


def pinyin(text: str) -> str:
    """``text`` with each Chinese character as its pinyin without tones, in
    lower case, run together ("张三" -> "zhangsan"); other characters kept,
    whitespace dropped."""
    from pypinyin import Style, lazy_pinyin

    # Phrases are read as phrases (pypinyin's dictionary picks the reading
    # of a polyphonic character from its neighbours).
    return _SPACE.sub("", "".join(lazy_pinyin(text, style=Style.NORMAL))).lower()


def search_key(name: str, nick: str = "", limit: int = DOMAIN_LIMIT) -> str:
    """The search key (TeamTalk's ``domain``) of a user with this login name and nick.

    The pinyin of the nick when it is Chinese (people look a colleague up by
    the name they see), else the pinyin of a Chinese login name, else the
    login name itself. Cut to the column's length.
    """
    if has_han(nick):
        key = pinyin(nick)
    elif has_han(name):
        key = pinyin(name)
    else:
        key = name
    return key[:limit] or name[:limit]
