"""Elliptic-curve key pairs in PEM files, as `openssl ecparam -genkey` would write them, for the
signing tests: made fresh with `cryptography`, never checked in."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa


@dataclass(frozen=True)
class KeyPair:
    private: Path  # PEM, PKCS#8, unencrypted
    public: Path  # PEM, SubjectPublicKeyInfo


def make_key_pair(folder: Path, name: str, curve: ec.EllipticCurve | None = None) -> KeyPair:
    """`name`.key (private) and `name`.pem (public) in `folder`, on P-256 by default."""
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(curve or ec.SECP256R1())
    return _write(folder, name, key)


def make_rsa_key_pair(folder: Path, name: str) -> KeyPair:
    """An RSA pair, which model signing here does not take."""
    folder.mkdir(parents=True, exist_ok=True)
    return _write(folder, name, rsa.generate_private_key(public_exponent=65537, key_size=2048))


def write_encrypted_private_key(folder: Path, name: str, password: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    path = folder / f"{name}.key"
    path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password)))
    return path


def _write(folder: Path, name: str, key) -> KeyPair:
    private, public = folder / f"{name}.key", folder / f"{name}.pem"
    private.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return KeyPair(private, public)
