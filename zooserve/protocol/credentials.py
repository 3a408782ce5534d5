"""TLS credentials for a client's channel to a zooserve server, for `zooserve health`,
`zooserve predict` and zooserve.Client alike. grpcio only, so a client-only install
(`zooserve[client]`) can import it."""

from __future__ import annotations

from pathlib import Path

import grpc

PemSource = str | Path | bytes | None  # a file's path, or the PEM itself


def read_pem(value: PemSource, what: str) -> bytes | None:
    """The PEM bytes `value` holds or names; OSError in one line naming `what` and the file
    when it cannot be read."""
    if value is None or isinstance(value, bytes):
        return value
    try:
        return Path(value).read_bytes()
    except OSError as exc:
        raise OSError(f"cannot read the {what} '{value}': {exc.strerror}") from None


def tls_credentials(
    ca: PemSource = None, cert: PemSource = None, key: PemSource = None
) -> grpc.ChannelCredentials:
    """TLS to a server whose certificate `ca` signed (None: the system's roots), presenting
    the client certificate `cert` with `key` when the server asks for one (mutual TLS).
    OSError when a file cannot be read; ValueError for a certificate without its key or a
    key without its certificate (callers that take them under other names check first, so
    their message names their own fields)."""
    if (cert is None) != (key is None):
        raise ValueError("mutual TLS needs both a client certificate and its key")
    return grpc.ssl_channel_credentials(
        root_certificates=read_pem(ca, "CA certificate"),
        private_key=read_pem(key, "client key"),
        certificate_chain=read_pem(cert, "client certificate"),
    )
