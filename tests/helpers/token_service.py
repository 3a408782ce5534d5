"""A Docker token service for the registry tests: the bearer-token side of registry
authentication, which Docker Hub, GHCR, Harbor and GitLab speak. distribution (configured
with `auth: token`) answers 401 with `Bearer realm=...,service=...,scope=...`; the client
fetches a token from the realm with its user name and password, and retries with it.

The token is a JWT signed ES256 by a throwaway key whose certificate the registry trusts
(`rootcertbundle`), carried in the header's `x5c`, granting what the scope asks of the
repository to the one known user. Runs in a thread of the test process, over TLS."""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from tests.helpers.pki import Pki

ISSUER = "zooserve-test-token-issuer"
SERVICE = "zooserve-test-registry"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class TokenService:
    realm: str  # the URL the registry sends clients to
    certificate: Path  # the registry's rootcertbundle
    tokens_issued: list[str]  # the users tokens went to, in order


def _signing_pair(folder: Path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISSUER)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    path = folder / "token-signer.crt"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert, path


def _token(key, cert, user: str, scope: str) -> str:
    header = {"typ": "JWT", "alg": "ES256",
              "x5c": [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]}
    access = []
    for item in scope.split():
        kind, _, rest = item.partition(":")
        name, _, actions = rest.rpartition(":")
        access.append({"type": kind, "name": name, "actions": actions.split(",")})
    now = int(time.time())
    claims = {"iss": ISSUER, "sub": user, "aud": SERVICE, "iat": now, "nbf": now - 60,
              "exp": now + 300, "jti": f"{now}-{id(access)}", "access": access}
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


@contextlib.contextmanager
def run_token_service(folder: Path, pki: Pki, user: str, password: str
                      ) -> Iterator[TokenService]:
    key, cert, cert_path = _signing_pair(folder)
    issued: list[str] = []
    expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            if self.headers.get("Authorization") != expected:
                self.send_response(401)
                self.end_headers()
                return
            token = _token(key, cert, user, " ".join(query.get("scope", [])))
            issued.append(user)
            body = json.dumps({"token": token, "expires_in": 300}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(pki.server_cert), str(pki.server_key))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield TokenService(f"https://127.0.0.1:{server.server_address[1]}/token", cert_path,
                           issued)
    finally:
        server.shutdown()
        server.server_close()
