"""A cluster CA and one certificate per node, for mutual TLS on internal links.

``DIR/ca.pem`` and ``DIR/ca.key`` are made once and reused; each node gets
``DIR/NAME.pem`` and ``DIR/NAME.key``. Keys are EC P-256 and written 0600;
node certificates carry the name as CN and DNS SAN (an IP address as IP
SAN) and may serve and connect (serverAuth + clientAuth). ca.key signs new
nodes only: keep it off the servers (they need ca.pem, their .pem and .key).
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from imctl.settings import write_secret

CA_DAYS = 3650
NODE_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,62}[A-Za-z0-9])?$")


@dataclass(frozen=True, slots=True)
class Issued:
    name: str
    cert: Path
    key: Path
    created: bool  # False: the files were there and were kept


def check_node_name(name: str) -> None:
    """A node name becomes a file name and a DNS name: letters, digits, '.' and '-'."""
    if not NODE_NAME.match(name) or ".." in name or name == "ca":
        raise ValueError(f"bad node name {name!r}: letters, digits, '.' and '-', not 'ca'")


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_secret(path, pem.decode())


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, bool]:
    cert_path, key_path = directory / "ca.pem", directory / "ca.key"
    if cert_path.exists() and key_path.exists():
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key_path}: not an EC key")
        return cert, key, False
    if cert_path.exists() or key_path.exists():
        raise ValueError(f"{directory}: ca.pem and ca.key go together; one of them is missing")
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "imcluster CA")])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # tolerate clock skew
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_key(key_path, key)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key, True


def _node(
    name: str, days: int, ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _new_key()
    try:
        alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        alt = x509.DNSName(name)
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def issue(
    directory: Path, names: list[str], days: int = 825, renew: bool = False
) -> tuple[bool, list[Issued]]:
    """Make (or reuse) the CA in ``directory`` and a certificate per name.

    Returns whether the CA was created, and per node whether its files were
    (existing ones are kept unless ``renew``, or unless the CA is new).
    """
    for name in names:
        check_node_name(name)
    if days < 1:
        raise ValueError("days must be at least 1")
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key, ca_created = _ca(directory)
    renew = renew or ca_created  # certificates left from another CA would not verify
    issued = []
    for name in dict.fromkeys(names):
        cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
        if cert_path.exists() and key_path.exists() and not renew:
            issued.append(Issued(name, cert_path, key_path, created=False))
            continue
        cert, key = _node(name, days, ca_cert, ca_key)
        _write_key(key_path, key)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        issued.append(Issued(name, cert_path, key_path, created=True))
    return ca_created, issued
