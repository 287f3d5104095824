"""``imctl sync ldap``: users and departments from an LDAP or Active Directory server.

:mod:`.plan` decides what to change (no I/O), :mod:`.mapping` turns LDAP
attributes into directory entries, :mod:`.source` reads them with ldap3,
:mod:`.apply` carries a plan out through the admin API.
"""
