"""Certificates for the gateway's HTTPS listener: a trigger's `tls-secret` (a `kubernetes.io/tls` Secret in the
project) or, for `tls: true` (cert-manager / kube-lego in a cluster), one issued by a local development CA.

Guarantee: the CA is made once per user (`ca.pem`, and `ca-key.pem` readable by the user only) under
$KUBELESS_LOCAL_CA_DIR, else $XDG_DATA_HOME/kubeless-local/ca (~/.local/share/kubeless-local/ca), and never
leaves that folder; what to trust is `ca.pem` (`kubeless-local gateway ca`). Host certificates are issued in
memory at each start, for the host and `<host>.localhost`, and written only into the project's private
state folder for the TLS library to load.
"""

import datetime
import os
import ssl
from pathlib import Path
from typing import Optional

from kubeless_local.errors import UserError

CA_NAME = "kubeless-local development CA"
VALID_DAYS = 825  # the longest validity browsers accept for a server certificate


def ca_dir() -> Path:
    root = os.environ.get("KUBELESS_LOCAL_CA_DIR") or os.path.join(
        os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share"), "kubeless-local", "ca"
    )
    return Path(root)


def _key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(common: str):
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


class DevCA:
    """The user's development CA: `load()` makes it the first time."""

    def __init__(self, folder: Optional[Path] = None):
        self.folder = Path(folder or ca_dir())
        self.cert_file = self.folder / "ca.pem"
        self.key_file = self.folder / "ca-key.pem"

    def load(self):
        """(certificate, key), made and written once."""
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        if not self.cert_file.is_file() or not self.key_file.is_file():
            self._create()
        try:
            cert = x509.load_pem_x509_certificate(self.cert_file.read_bytes())
            key = serialization.load_pem_private_key(self.key_file.read_bytes(), None)
        except (OSError, ValueError) as exc:
            raise UserError(
                "%s: the development CA cannot be read (%s); remove the folder to make a new one" % (self.folder, exc)
            ) from None
        return cert, key

    def _create(self) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization

        key = _key()
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(CA_NAME))
            .issuer_name(_name(CA_NAME))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )  # keyCertSign, cRLSign
            .sign(key, hashes.SHA256())
        )
        self.folder.mkdir(parents=True, exist_ok=True)
        self.folder.chmod(0o700)
        fd = os.open(self.key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(_pem_key(key))
        self.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, hosts: list) -> tuple:
        """(certificate PEM, key PEM) for `hosts` (the first is the subject), signed by the CA."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.x509.oid import ExtendedKeyUsageOID

        ca_cert, ca_key = self.load()
        key = _key()
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(hosts[0]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def server_context(cert_pem: bytes, key_pem: bytes, folder: Path, name: str, origin: str) -> ssl.SSLContext:
    """An SSLContext serving this certificate; UserError naming `origin` when the pair does not load."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    path = folder / ("%s.pem" % name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(key_pem.rstrip(b"\n") + b"\n" + cert_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(path)
    except (ssl.SSLError, ValueError) as exc:
        raise UserError("%s: the certificate and key do not load (%s)" % (origin, exc)) from None
    return context
