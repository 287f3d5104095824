"""Internal links between the cluster's servers.

* :mod:`.wire`: the internal frame (request ids that are never reused).
* :mod:`.handshake`: the HMAC proofs of the cluster secret.
* :mod:`.session`: the sans-IO state machine of one link.
* :mod:`.protocol`: :class:`Link`, its asyncio adapter (either side).
* :mod:`.server`: :class:`LinkServer`, the accepting side, one command table per role.
* :mod:`.client`: :class:`Upstream`, a self-healing outgoing link.
* :mod:`.settings`: secrets, timing and TLS shared by a process's links; backoff.
"""

from common.link.client import Upstream
from common.link.handshake import Identity
from common.link.protocol import Link, LinkDown, RequestTimeout
from common.link.server import LinkServer
from common.link.session import Timing
from common.link.settings import Backoff, LinkSettings
from common.link.wire import INTERNAL_MAX_FRAME

__all__ = [
    "INTERNAL_MAX_FRAME",
    "Backoff",
    "Identity",
    "Link",
    "LinkDown",
    "LinkServer",
    "LinkSettings",
    "RequestTimeout",
    "Timing",
    "Upstream",
]
