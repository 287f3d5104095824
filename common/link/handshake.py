"""The proofs of the link handshake: pure functions of the secret and nonces.

Both ends prove they hold the cluster secret by an HMAC-SHA256 over a
transcript that binds both fresh nonces and both identities, one label per
direction, so neither a captured proof nor a reflected one is of any use on
another connection (docs/link-security.md).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from common.pb import internal_pb2

LINK_VERSION = 1
NONCE_SIZE = 32
CLIENT_LABEL = b"imcluster-link-v1 client"
SERVER_LABEL = b"imcluster-link-v1 server"
MAX_NODE_ID = 64


@dataclass(frozen=True, slots=True)
class Identity:
    """Who one end of a link is: its role (a LinkRole) and node id."""

    role: int
    node_id: str


def transcript(
    label: bytes, server_nonce: bytes, client_nonce: bytes, server: Identity, client: Identity
) -> bytes:
    parts = (
        server_nonce,
        client_nonce,
        str(server.role).encode(),
        server.node_id.encode(),
        str(client.role).encode(),
        client.node_id.encode(),
    )
    # Length-prefixed, so no two different field lists make the same bytes.
    return label + b"".join(len(p).to_bytes(4, "big") + p for p in parts)


def prove(secret: bytes, message: bytes) -> bytes:
    return hmac.new(secret, message, hashlib.sha256).digest()


def matching_secret(secrets: Sequence[bytes], message: bytes, proof: bytes) -> bytes | None:
    """The secret (of those accepted) that made ``proof``, or None."""
    found = None
    for secret in secrets:
        # Every secret is tried, so the time taken says nothing about which matched.
        if hmac.compare_digest(prove(secret, message), proof) and found is None:
            found = secret
    return found


def valid_node_id(value: object) -> bool:
    """A node id is 1-64 printable characters (it is logged and used as a key)."""
    return isinstance(value, str) and 0 < len(value) <= MAX_NODE_ID and value.isprintable()


def role_name(role: int) -> str:
    """A LinkRole for people: ``db_proxy``, ``gateway``..."""
    try:
        return internal_pb2.LinkRole.Name(role).removeprefix("ROLE_").lower()  # type: ignore[arg-type]
    except ValueError:
        return f"role {role}"
