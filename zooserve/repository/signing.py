"""Signed versions: an OpenSSF model-signing signature over every file of a version folder,
kept in the folder itself as `model.sig` (SIGNATURE_FILE), beside the card.

The card's sha256s travel with the files they describe, so whoever can change a file can
change the card too; a signature made with a private key cannot be remade without it. What is
signed is every file of the version folder, the card included, by its path in the folder and
its sha256 (model-signing's file serialization), except the signature itself and a library's
live Qdrant store (LIBRARY_STORE_FOLDER, which changes as it is opened; the card leaves it out
for the same reason). The signature is a Sigstore bundle whose DSSE envelope carries that
list, signed with an elliptic-curve key (P-256, P-384 or P-521) held in a PEM file: no
network, no certificate authority.

    sign_version(version_dir, private_key)       # writes version_dir/model.sig
    keys = verify_keys([public_pem_or_folder])    # checked, folders expanded
    verify_version(version_dir, keys)            # the key that verified, or SignatureRefused

Who calls these: `zooserve sign`, `zooserve export --sign-key` and `zooserve train
--sign-key` (inside the staged folder, before it is published), the server with
`--verify-key` (before a version is loaded) and `zooserve pull --verify-key`.

Every failure is a SigningError (a ValueError) with a one-line message that names no path
outside the version folder but the key files given: SignatureRefused (the version is not
signed by one of the keys, or changed since), KeyRefused (a key file that cannot be used),
SigningUnavailable (the `signing` extra is not installed). model_signing is imported inside
the functions, so importing this module costs nothing."""

from __future__ import annotations

import base64
import json
import os
import secrets
from collections.abc import Iterable, Sequence
from pathlib import Path

from zooserve.protocol.errors import one_line, quoted
from zooserve.repository.layout import LIBRARY_FILE, LIBRARY_STORE_FOLDER, SIGNATURE_FILE

__all__ = [
    "SIGNATURE_FILE", "KeyRefused", "SignatureRefused", "SigningError", "SigningUnavailable",
    "check_private_key", "sign_version", "unsigned_entries", "verify_keys", "verify_version",
]

# The curves model-signing signs and verifies with.
CURVES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
KEY_FILES = "*.pem"  # a key folder's keys
INSTALL_HINT = "pip install 'zooserve[signing]'"
# A PEM key is a few hundred bytes; a signature lists a version's files, a few KB.
_MAX_KEY_BYTES = 64 * 1024
_MAX_SIGNATURE_BYTES = 16 * 1024 * 1024
_NAMED_AT_MOST = 5  # files a refusal names before "and N more"


class SigningError(ValueError):
    """Signing or verifying cannot go on; the message is one line."""


class SignatureRefused(SigningError):
    """The version is not signed by one of the keys given, or changed since it was signed.
    The message is safe to show in the repository index (file names are quoted, bounded)."""


class KeyRefused(SigningError):
    """A key file (or key folder) that cannot be used; the message names it."""


class SigningUnavailable(SigningError):
    """model-signing is not installed: the `signing` extra."""


def unsigned_entries(version_dir: Path) -> list[str]:
    """The top-level entries of a version folder its signature leaves out: the signature
    itself, and a library's live Qdrant store (as the card's FILES_KEY leaves it out)."""
    entries = [SIGNATURE_FILE]
    if (version_dir / LIBRARY_FILE).is_file():
        entries.append(LIBRARY_STORE_FOLDER)
    return entries


def sign_version(version_dir: Path, private_key: Path) -> Path:
    """Sign every file of `version_dir` (see the module's docstring) with the EC private key
    in the PEM file `private_key`, and write the signature to version_dir/model.sig in one
    rename, replacing an earlier one. Returns the signature's path. KeyRefused for a key
    that cannot be used; SignatureRefused for a folder that cannot be signed."""
    hashing, signing, _ = _model_signing()
    check_private_key(private_key)
    folder = Path(os.path.realpath(version_dir))
    if not folder.is_dir():
        raise SignatureRefused(f"{_shown(version_dir)} is not a version folder")
    _refuse_odd_entries(folder, "cannot be signed")
    # Written beside the folder, never in it, so the hashing does not meet a half-written
    # file; then renamed in.
    scratch = folder.parent / f".{folder.name}.{SIGNATURE_FILE}.{secrets.token_hex(6)}"
    try:
        config = signing.Config().use_elliptic_key_signer(private_key=private_key)
        config.set_hashing_config(_hashing_config(hashing, folder))
        config.sign(folder, scratch)
        os.replace(scratch, folder / SIGNATURE_FILE)
    finally:
        scratch.unlink(missing_ok=True)
    return Path(version_dir) / SIGNATURE_FILE


def verify_keys(paths: Iterable[Path]) -> list[Path]:
    """The public key files `paths` name, each checked to be a PEM EC public key: a path is a
    key file, or a folder whose *.pem files are keys (hidden ones aside; read now, not
    again). KeyRefused for a missing path, an empty folder or a key that cannot be used."""
    _model_signing()
    keys: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.glob(KEY_FILES)
                           if p.is_file() and not p.name.startswith("."))
            if not found:
                raise KeyRefused(f"key folder {_shown(path)} holds no {KEY_FILES} files")
        elif path.exists():
            found = [path]
        else:
            raise KeyRefused(f"verification key {_shown(path)} does not exist")
        for key in found:
            _check_public_key(key)
            if key not in keys:
                keys.append(key)
    if not keys:
        raise KeyRefused("no verification key given")
    return keys


def verify_version(version_dir: Path, public_keys: Sequence[Path]) -> Path:
    """The key of `public_keys` (as verify_keys returned them) that the version's signature
    verifies against, with every file of the folder as it was signed. SignatureRefused says
    why not: unsigned, signed by none of the keys, or which files changed, were added or
    were removed since signing."""
    hashing, _, verifying = _model_signing()
    from cryptography.exceptions import InvalidSignature

    if not public_keys:
        raise KeyRefused("no verification key given")
    folder = Path(os.path.realpath(version_dir))
    signature = folder / SIGNATURE_FILE
    if not signature.is_file():
        raise SignatureRefused(f"unsigned: its folder has no {SIGNATURE_FILE}")
    _refuse_odd_entries(folder, "cannot be verified")
    signed = _signed_files(signature)
    for key in public_keys:
        config = _hashing_config(hashing, folder)
        verifier = verifying.Config().use_elliptic_key_verifier(public_key=key)
        try:
            verifier.set_hashing_config(config).verify(folder, signature)
        except ValueError as exc:
            # model-signing 1.1 raises "Signature mismatch" only once the key has verified
            # the signature and the files then differ from those it lists; "Key mismatch"
            # when the signature names another key.
            if str(exc).startswith("Signature mismatch"):
                raise SignatureRefused(_changes(signed, config.hash(folder))) from None
            if str(exc).startswith("Key mismatch"):
                continue
            raise SignatureRefused(f"{SIGNATURE_FILE} cannot be verified: "
                                   f"{one_line(exc, 160)}") from None
        except InvalidSignature:  # made by another key (one the signature does not name)
            continue
        except OSError as exc:
            raise SignatureRefused(f"cannot read its files: {exc.strerror or exc}") from None
        _refuse_left_out(folder, signed)
        return key
    keys = _named([Path(key).name for key in public_keys])
    raise SignatureRefused(f"signed by none of the given keys ({keys}): its {SIGNATURE_FILE} "
                           "was made with another key, or altered after signing")


def check_private_key(path: Path) -> None:
    """KeyRefused unless `path` is an unencrypted PEM EC private key on a curve model-signing
    takes: `export --sign-key` and `train --sign-key` ask before any work starts."""
    _model_signing()
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    what = f"signing key {_shown(path)}"
    data = _read_key(path, what)
    if b"PRIVATE KEY" not in data:
        if b"PUBLIC KEY" in data:
            raise KeyRefused(f"{what} is a public key; signing takes the private key")
        raise KeyRefused(f"{what} is not a PEM private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise KeyRefused(f"{what} is encrypted; zooserve signs with an unencrypted private "
                         "key (keep the file itself secret)") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise KeyRefused(f"{what} cannot be read as a PEM private key: "
                         f"{one_line(exc, 120)}") from None
    _check_curve(key, what)


# -- the pieces ------------------------------------------------------------------------------


def _model_signing():
    try:
        from model_signing import hashing, signing, verifying
    except ImportError:
        raise SigningUnavailable(
            f"signing and verifying models needs the signing extra: {INSTALL_HINT}") from None
    return hashing, signing, verifying


def _hashing_config(hashing, folder: Path):
    """Whole files by sha256, links refused, git's files signed like any other: every file
    but unsigned_entries. A fresh one per use (verifying adds the signer's ignored paths)."""
    return hashing.Config().set_ignored_paths(paths=unsigned_entries(folder),
                                              ignore_git_paths=False)


def _shown(path: Path | str) -> str:
    """A path as a message shows it: quoted, so a newline in it cannot break the line."""
    return quoted(str(path), 200)


def _named(names: list[str]) -> str:
    shown = ", ".join(quoted(name) for name in names[:_NAMED_AT_MOST])
    more = len(names) - _NAMED_AT_MOST
    return shown + (f" and {more} more" if more > 0 else "")


def _refuse_odd_entries(folder: Path, what: str) -> None:
    """A symbolic link or a special file anywhere in the folder: model-signing hashes plain
    files only, and a link may lead out of the repository."""
    odd = [path.relative_to(folder).as_posix() for path in sorted(folder.rglob("*"))
           if path.is_symlink() or not (path.is_file() or path.is_dir())]
    if odd:
        raise SignatureRefused(f"its folder {what}: {_named(odd)}: a symbolic link or a special "
                               "file; a signed version holds plain files only")


def _signed_files(signature: Path) -> dict[str, str]:
    """The files the signature lists (path -> hex digest), read without trusting it: for
    the messages and for the checks beside model-signing's own. SignatureRefused for a
    file that is not an OpenSSF model signature of whole files by sha256."""
    try:
        if signature.stat().st_size > _MAX_SIGNATURE_BYTES:
            raise ValueError("too large")
        bundle = json.loads(signature.read_bytes())
        statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
        predicate = statement["predicate"]
        method = predicate["serialization"]["method"]
        hash_type = predicate["serialization"]["hash_type"]
        files = {str(item["name"]): str(item["digest"]) for item in predicate["resources"]}
    except OSError as exc:
        raise SignatureRefused(f"cannot read {SIGNATURE_FILE}: {exc.strerror or exc}") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SignatureRefused(f"{SIGNATURE_FILE} is not an OpenSSF model signature "
                               f"({one_line(exc, 80)})") from None
    if (method, hash_type) != ("files", "sha256"):
        raise SignatureRefused(
            f"{SIGNATURE_FILE} hashes by {quoted(method)} with {quoted(hash_type)}; zooserve "
            "verifies signatures over whole files by sha256, as `zooserve sign` and "
            "model-signing's defaults make them")
    return files


def _changes(signed: dict[str, str], manifest) -> str:
    """Which files differ from the signed list: changed, added, removed."""
    actual = {item.identifier: item.digest.digest_hex
              for item in manifest.resource_descriptors()}
    changed = sorted(n for n in signed.keys() & actual.keys() if signed[n] != actual[n])
    parts = [f"{quoted(n)} changed" for n in changed]
    parts += [f"{quoted(n)} added" for n in sorted(actual.keys() - signed.keys())]
    parts += [f"{quoted(n)} removed" for n in sorted(signed.keys() - actual.keys())]
    if not parts:  # the same files: what differs is the signed list's own form
        return f"its files do not match the list {SIGNATURE_FILE} signs"
    more = len(parts) - _NAMED_AT_MOST
    return ("files changed since signing: " + ", ".join(parts[:_NAMED_AT_MOST])
            + (f" and {more} more" if more > 0 else ""))


def _refuse_left_out(folder: Path, signed: dict[str, str]) -> None:
    """A signature whose signer told it to ignore files (model-signing's ignore paths,
    honoured when it verifies) vouches for none of them: any file here but the
    unsigned_entries must be listed."""
    skipped = set(unsigned_entries(folder))
    present = [path.relative_to(folder).as_posix() for path in sorted(folder.rglob("*"))
               if path.is_file() and path.relative_to(folder).parts[0] not in skipped]
    left_out = [name for name in present if name not in signed]
    if left_out:
        raise SignatureRefused(f"its signature leaves out {_named(left_out)} (its signer "
                               "ignored them): every file of a version must be signed")


def _read_key(path: Path, what: str) -> bytes:
    try:
        with open(path, "rb") as stream:
            data = stream.read(_MAX_KEY_BYTES + 1)
    except FileNotFoundError:
        raise KeyRefused(f"{what} does not exist") from None
    except IsADirectoryError:
        raise KeyRefused(f"{what} is a folder, not a PEM key file") from None
    except OSError as exc:
        raise KeyRefused(f"cannot read {what}: {exc.strerror or exc}") from None
    if len(data) > _MAX_KEY_BYTES:
        raise KeyRefused(f"{what} is too large to be a PEM key")
    return data


def _check_public_key(path: Path) -> None:
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    what = f"verification key {_shown(path)}"
    data = _read_key(path, what)
    if b"PRIVATE KEY" in data:
        raise KeyRefused(f"{what} is a private key: verifying takes the public key (the "
                         "private one stays with whoever signs)")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise KeyRefused(f"{what} is not a PEM public key") from None
    _check_curve(key, what)


def _check_curve(key, what: str) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    if not isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        raise KeyRefused(f"{what} is not an elliptic-curve key; model signing takes EC keys "
                         f"({', '.join(CURVES.values())})")
    if key.curve.name not in CURVES:
        raise KeyRefused(f"{what} is on curve {key.curve.name}; model signing takes "
                         f"{', '.join(CURVES.values())}")
