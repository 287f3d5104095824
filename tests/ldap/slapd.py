"""A real OpenLDAP ``slapd`` of a test's own: a temp dir, a slapd.conf, data
loaded by ``slapadd``, listening on ``ldap://127.0.0.1:<free port>``.

mdb backend, suffix dc=example,dc=com, rootdn cn=admin with ROOT_PASSWORD,
the core/cosine/inetorgperson/nis schemas and the ppolicy overlay (for
``pwdAccountLockedTime``, OpenLDAP's disabled accounts).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from imctl.ldap_sync.ldap3_import import ldap3

SLAPD = "/usr/sbin/slapd"
SLAPADD = "/usr/sbin/slapadd"
SCHEMAS = Path("/etc/ldap/schema")
SUFFIX = "dc=example,dc=com"
ROOT_DN = f"cn=admin,{SUFFIX}"
ROOT_PASSWORD = "ldap-root-secret"
START_TIMEOUT = 15.0


def available() -> bool:
    return Path(SLAPD).exists() and Path(SLAPADD).exists() and (SCHEMAS / "inetorgperson.schema").exists()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def slapd_conf(root: Path, tls_dir: Path | None = None) -> str:
    schemas = "\n".join(
        f"include {SCHEMAS / name}.schema" for name in ("core", "cosine", "inetorgperson", "nis")
    )
    return f"""{schemas}
# A directory's usual limits: 500 entries a plain search, paged searches to the end.
sizelimit size.soft=500 size.prtotal=unlimited
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload ppolicy
pidfile {root}/slapd.pid
argsfile {root}/slapd.args
database mdb
suffix "{SUFFIX}"
rootdn "{ROOT_DN}"
rootpw {ROOT_PASSWORD}
directory {root}/db
maxsize 33554432
overlay ppolicy
""" + (
        f"TLSCACertificateFile {tls_dir}/ca.pem\n"
        f"TLSCertificateFile {tls_dir}/127.0.0.1.pem\n"
        f"TLSCertificateKeyFile {tls_dir}/127.0.0.1.key\n"
        if tls_dir
        else ""
    )


@dataclass
class Slapd:
    root: Path
    port: int
    process: subprocess.Popen[bytes]
    tls_port: int = 0  # ldaps://, when started with a tls_dir

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://127.0.0.1:{self.tls_port}"

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @contextlib.contextmanager
    def admin(self) -> Iterator[ldap3.Connection]:
        """A connection bound as the root DN (to change the data during a test), closed after.
        (ldap3's own ``with`` leaves a connection bound before it open.)"""
        server = ldap3.Server("127.0.0.1", port=self.port, get_info=ldap3.NONE, connect_timeout=5)
        conn = ldap3.Connection(server, ROOT_DN, ROOT_PASSWORD, auto_bind=True, receive_timeout=5)
        try:
            yield conn
        finally:
            conn.unbind()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)


def start(root: Path, ldif: str, tls_dir: Path | None = None) -> Slapd:
    """slapd on a free port with ``ldif`` loaded; answers a bind when this returns.
    With ``tls_dir`` (imctl.certs' ca.pem and 127.0.0.1.pem/.key) it offers
    StartTLS, and ldaps:// on a second port."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "db").mkdir()
    conf = root / "slapd.conf"
    conf.write_text(slapd_conf(root, tls_dir))
    (root / "data.ldif").write_text(ldif)
    subprocess.run(
        [SLAPADD, "-f", str(conf), "-l", str(root / "data.ldif")], check=True, capture_output=True, timeout=30
    )
    port, tls_port = free_port(), free_port() if tls_dir else 0
    urls = f"ldap://127.0.0.1:{port}/" + (f" ldaps://127.0.0.1:{tls_port}/" if tls_port else "")
    log = (root / "slapd.log").open("wb")
    process = subprocess.Popen([SLAPD, "-f", str(conf), "-h", urls, "-d", "0"], stdout=log, stderr=log)
    log.close()
    started = Slapd(root, port, process, tls_port)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"slapd exited with {process.returncode}: {(root / 'slapd.log').read_text()}")
        try:
            # A plain connect first: ldap3 leaks the socket of a refused connect.
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                pass
            with started.admin():
                pass
            return started
        except (OSError, ldap3.core.exceptions.LDAPException):
            if time.monotonic() > deadline:
                started.stop()
                raise RuntimeError(f"slapd did not answer within {START_TIMEOUT} s") from None
            time.sleep(0.05)  # polling a bind: slapd says nothing when it is ready


def entry(dn: str, **attributes: str | list[str]) -> str:
    lines = [f"dn: {dn}"]
    for key, value in attributes.items():
        for one in value if isinstance(value, list) else [value]:
            lines.append(f"{key}: {one}")
    return "\n".join(lines) + "\n"


def person(uid: str, ou_dn: str, cn: str, **extra: str | list[str]) -> str:
    """An inetOrgPerson whose entryUUID is the same in every slapd a test starts
    (slapadd takes it from the LDIF), so that a cluster shared by tests knows it."""
    return entry(
        f"uid={uid},{ou_dn}",
        objectClass="inetOrgPerson",
        uid=uid,
        cn=cn,
        sn=cn.split()[-1],
        entryUUID=str(uuid.uuid5(uuid.NAMESPACE_URL, f"ldap-test:{uid}")),
        **extra,
    )
