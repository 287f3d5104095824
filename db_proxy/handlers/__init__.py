"""db_proxy's internal protocol: one module per part of what gateways and
admins may ask, each turning requests into service calls and replies.

* :mod:`.login` (the login role), :mod:`.directory` and :mod:`.files` (the
  directory role), :mod:`.messages` and :mod:`.groups` (the messages role),
  :mod:`.admin` with :mod:`.admin_args` (the admin role);
* :mod:`.replies`: what they share (refusals, reply parts).
"""
