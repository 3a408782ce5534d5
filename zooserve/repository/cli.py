"""`zooserve sign NAME[:VERSION] --key PRIVATE.pem`: sign a version of the model repository in
place (zooserve/repository/signing.py says what is signed). Added to the zooserve CLI's
parser by `add_signing_commands`; nothing is imported here that the base install lacks, and
a missing `signing` extra is one line when the command runs."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from zooserve.repository.layout import find_version
from zooserve.repository.signing import sign_version

# The server's `models` setting reads the same variable, with the same default.
MODELS_VARIABLE = "ZOOSERVE_MODELS"


def add_signing_commands(commands) -> None:
    """Add `sign` to an argparse subparsers object."""
    sign = commands.add_parser(
        "sign", help="sign a model version (every file, the card included) with a private key",
        description=(
            "Write an OpenSSF model-signing signature over every file of a version folder "
            "into the folder, as model.sig, with an elliptic-curve private key (PEM). A server "
            "started with --verify-key PUBLIC.pem then serves the version only while its files "
            "are the ones signed. Signing again replaces the signature."
        ),
    )
    sign.add_argument("model", metavar="NAME[:VERSION]",
                      help="the model (or library) and its version [the highest]")
    sign.add_argument("--key", required=True, type=Path, metavar="PRIVATE.pem",
                      help="the EC private key (P-256, P-384 or P-521), unencrypted PEM")
    sign.add_argument("--models", type=Path,
                      help=f"model repository folder [{MODELS_VARIABLE}, else ./models]")
    sign.set_defaults(func=run_sign)


def models_folder(given: Path | None) -> Path:
    return given or Path(os.environ.get(MODELS_VARIABLE) or "models")


def run_sign(args: argparse.Namespace) -> int:
    """Exit 0 when signed, 2 for a mistake in what was given, 1 when writing failed."""
    try:
        name, version, folder = find_version(models_folder(args.models), args.model)
        path = sign_version(folder, args.key)
    except (ValueError, LookupError) as exc:  # a SigningError is a ValueError
        return _error(str(exc), 2)
    except OSError as exc:
        return _error(f"cannot write the signature: {exc}", 1)
    print(f"signed {name} version {version}: {path}")
    return 0


def _error(message: str, status: int) -> int:
    print(f"zooserve sign: error: {message}", file=sys.stderr)
    return status
