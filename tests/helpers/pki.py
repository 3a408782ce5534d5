"""A throwaway PKI for the TLS tests, a TLS `zooserve serve`, and httpx's trust in it; and
the bearer token the test servers are given."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.helpers.server import RunningServer, run_server
from zooserve.protocol.credentials import tls_credentials

TOKEN = "zooserve-test-token-4f1c2a9e7b"  # 30 characters, for the test servers


# A throwaway PKI: a server CA and its server certificate (localhost, 127.0.0.1), a client CA
# and its client certificate, and a stranger's CA with a client certificate of its own.


@dataclass
class Pki:
    ca: Path  # signed the server certificate
    server_cert: Path
    server_key: Path
    client_ca: Path  # signed the client certificate
    client_cert: Path
    client_key: Path
    stranger_cert: Path  # a client certificate the client CA did not sign
    stranger_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(subject: str, key, issuer: tuple[str, object] | None, *, ca: bool = False,
                 usage=None, names=()) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer if issuer else (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                          content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, encipher_only=False,
                          decipher_only=False),
            critical=True,
        )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(folder: Path, stem: str, cert: x509.Certificate, key=None) -> tuple[Path, Path | None]:
    cert_path = folder / f"{stem}.crt"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is None:
        return cert_path, None
    key_path = folder / f"{stem}.key"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def make_pki(folder: Path) -> Pki:
    folder.mkdir(parents=True, exist_ok=True)

    def key():
        return ec.generate_private_key(ec.SECP256R1())

    ca_key, client_ca_key, stranger_ca_key = key(), key(), key()
    ca = _certificate("zooserve test CA", ca_key, None, ca=True)
    client_ca = _certificate("zooserve test client CA", client_ca_key, None, ca=True)
    server_key, client_key, stranger_key = key(), key(), key()
    server = _certificate(
        "localhost", server_key, ("zooserve test CA", ca_key),
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        # `zooserve`: the name deploy/k8s's secure probes ask for.
        names=[x509.DNSName("localhost"), x509.DNSName("zooserve"),
               x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    client = _certificate("a client", client_key, ("zooserve test client CA", client_ca_key),
                          usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    stranger = _certificate("a stranger", stranger_key, ("someone else's CA", stranger_ca_key),
                            usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    ca_path, _ = _write(folder, "ca", ca)
    client_ca_path, _ = _write(folder, "client-ca", client_ca)
    server_cert, server_key_path = _write(folder, "server", server, server_key)
    client_cert, client_key_path = _write(folder, "client", client, client_key)
    stranger_cert, stranger_key_path = _write(folder, "stranger", stranger, stranger_key)
    return Pki(ca_path, server_cert, server_key_path, client_ca_path, client_cert,
               client_key_path, stranger_cert, stranger_key_path)


@contextlib.contextmanager
def run_tls_server(models: Path, tmp: Path, pki: Pki, *args: str, mutual: bool = False,
                   env: dict | None = None) -> Iterator[RunningServer]:
    """run_server with --tls-cert/--tls-key, waiting for the server with a TLS
    health check (its plaintext check cannot reach a TLS port)."""
    credentials = tls_credentials(pki.ca, pki.client_cert if mutual else None,
                                  pki.client_key if mutual else None)
    tls = ["--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key)]
    with run_server(models, tmp, *tls, *args, env=env, credentials=credentials) as running:
        yield running


def trusting(pki: Pki, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    """httpx's TLS settings: trust the test CA, present a client certificate if given."""
    context = ssl.create_default_context(cafile=str(pki.ca))
    if cert is not None:
        context.load_cert_chain(str(cert), str(key))
    return context
