"""Mutual TLS for internal links: the contexts both ends use.

Both ends present a certificate signed by the cluster CA and require one
from the other (``imctl certs`` makes them). Host names are not checked:
nodes are reached by IP address, often through a list of addresses in the
config, and a CA of our own signs only our own nodes. What a peer *is* is
settled by two things together: a certificate from the cluster CA (TLS) and
the role and node id it proves with the cluster secret in the link
handshake (docs/link-security.md). :func:`peer_common_name` gives the
certificate's name, for logs and for a check against the node id.

Only TLS 1.3: both ends are this code, so there is no old peer to wait for,
and 1.3 has no weak cipher suite to configure away.
"""

from __future__ import annotations

import ssl
from typing import Any

from common.config import ConfigError


def _load(context: ssl.SSLContext, cert: str, key: str, ca: str) -> ssl.SSLContext:
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.verify_mode = ssl.CERT_REQUIRED
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cluster.tls_cert/tls_key: cannot load {cert} with {key}: {exc}") from None
    try:
        context.load_verify_locations(cafile=ca)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cluster.tls_ca: cannot load {ca}: {exc}") from None
    _export_expiry("node", cert)
    _export_expiry("ca", ca)
    return context


def _export_expiry(which: str, path: str) -> None:
    """``imcluster_tls_cert_expiry_timestamp_seconds{cert=which}``: for an alert weeks before it lapses."""
    # Here, not at the top: imctl loads this module too, and needs neither.
    from cryptography import x509

    from common.metrics import TLS_CERT_EXPIRY

    try:
        with open(path, "rb") as f:
            certificate = x509.load_pem_x509_certificate(f.read())
    except (OSError, ValueError):
        return  # loaded above, so this cannot fail but in a race; the metric is only a help
    TLS_CERT_EXPIRY.labels(which).set(certificate.not_valid_after_utc.timestamp())


def server_context(cert: str, key: str, ca: str) -> ssl.SSLContext:
    """For the accepting end: presents ``cert``, requires a client cert from ``ca``."""
    return _load(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), cert, key, ca)


def client_context(cert: str, key: str, ca: str) -> ssl.SSLContext:
    """For the connecting end: presents ``cert``, requires a server cert from ``ca``.

    ``check_hostname`` is off (see the module docstring): the chain to the
    cluster CA is verified, the name in it is not compared to the address.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False  # before verify_mode: the reverse order is refused
    return _load(context, cert, key, ca)


def peer_common_name(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> str | None:
    """The verified peer certificate's CN (the node name ``imctl certs`` put there), if any.

    ``ssl_object`` is what ``transport.get_extra_info("ssl_object")`` returns.
    """
    if ssl_object is None:
        return None
    cert = ssl_object.getpeercert()
    if not cert:
        return None
    subject: Any = cert.get("subject", ())  # ((("commonName", "db-1"),), ...)
    for rdn in subject:
        for name, value in rdn:
            if name == "commonName":
                return str(value)
    return None
