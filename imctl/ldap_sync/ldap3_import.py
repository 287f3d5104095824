"""ldap3, imported once with its import-time DeprecationWarning silenced.

ldap3 2.9.1 reads ``pyasn1``'s ``tagMap``, which pyasn1 0.6 deprecates with
a warning on first use; nothing of ours can fix that, and the test suite
runs with warnings as errors.
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import ldap3
    from ldap3.core import exceptions
    from ldap3.utils.dn import parse_dn

__all__ = ["exceptions", "ldap3", "parse_dn"]
