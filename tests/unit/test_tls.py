"""The gateway's development CA (emulator/tls.py): made once, its key the user's only, host certificates it signs."""

import ssl
import stat

from cryptography import x509

from kubeless_local.emulator import tls


def test_the_ca_is_made_once_and_signs_host_certificates(tmp_path):
    authority = tls.DevCA(tmp_path / "ca")
    authority.load()
    first = authority.cert_file.read_bytes()
    assert stat.S_IMODE(authority.key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(authority.folder.stat().st_mode) == 0o700
    cert_pem, key_pem = authority.issue(["a.test", "a.test.localhost"])
    assert authority.cert_file.read_bytes() == first  # loaded again, not made again
    cert = x509.load_pem_x509_certificate(cert_pem)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert names == ["a.test", "a.test.localhost"]
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(first))
    context = tls.server_context(cert_pem, key_pem, tmp_path / "state", "a.test", "t.yaml")
    assert isinstance(context, ssl.SSLContext)
    assert stat.S_IMODE((tmp_path / "state" / "a.test.pem").stat().st_mode) == 0o600
