"""`zooserve push` and `zooserve pull`: repository versions to and from an OCI registry."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def _client(args: argparse.Namespace, reference, command: str):
    from zooserve.registry.credentials import CredentialsError, find_credentials
    from zooserve.registry.distribution import RegistryClient, RegistryError

    try:
        credentials = find_credentials(reference.host)
        return RegistryClient(reference.api_host, credentials, plain_http=args.plain_http,
                              ca_file=Path(args.tls_ca) if args.tls_ca else None)
    except (CredentialsError, RegistryError) as exc:
        raise SystemExit(f"zooserve {command}: error: {exc}") from None


def _reference(text: str, command: str):
    from zooserve.registry.reference import BadReference, parse_reference

    try:
        return parse_reference(text)
    except BadReference as exc:
        raise SystemExit(f"zooserve {command}: error: {exc}") from None


def _models_root(args: argparse.Namespace) -> Path:
    from zooserve.serving.settings import Settings

    return Settings.from_sources({"models": args.models}).models


def _push(args: argparse.Namespace) -> int:
    from zooserve.registry.distribution import RegistryError
    from zooserve.registry.push import PushError, push_version

    reference = _reference(args.reference, "push")
    client = _client(args, reference, "push")
    try:
        pushed = push_version(client, _models_root(args), args.model, reference)
    except (PushError, RegistryError, OSError) as exc:
        raise SystemExit(f"zooserve push: error: {exc}") from None
    print(f"pushed {args.model} to {pushed.reference}@{pushed.digest}: {pushed.files} files, "
          f"{_size(pushed.size)} ({_size(pushed.sent)} sent) in {pushed.seconds:.2f} s")
    return 0


def _pull(args: argparse.Namespace) -> int:
    from zooserve.registry.artifact import ArtifactError
    from zooserve.registry.distribution import RegistryError
    from zooserve.registry.pull import PullError, pull_artifact
    from zooserve.repository.publish import PublishError

    if args.name and len(args.references) > 1:
        raise SystemExit("zooserve pull: error: --name renames one model; give one reference")
    from zooserve.serving.settings import Settings

    # The server's own declarations: --models / ZOOSERVE_MODELS, --verify-key /
    # ZOOSERVE_VERIFY_KEY (repeatable; the variable's paths split as the server splits them).
    settings = Settings.from_sources({"models": args.models, "verify_key": args.verify_key})
    keys = _verify_keys(settings.verify_key)
    root = settings.models
    references = [_reference(text, "pull") for text in args.references]
    for reference in references:
        client = _client(args, reference, "pull")
        try:
            pulled = pull_artifact(client, reference, root, args.name, keys)
        except (ArtifactError, PullError, RegistryError, PublishError, OSError) as exc:
            raise SystemExit(f"zooserve pull: error: {exc}") from None
        if pulled.already_there:
            print(f"{reference}@{pulled.digest} is already in {pulled.folder}, byte for byte: "
                  "nothing to pull")
            continue
        extra = f", and its embedding model into {pulled.embedding_model}" \
            if pulled.embedding_model else ""
        checked = ", signature verified" if keys else ""
        print(f"pulled {reference}@{pulled.digest} into {pulled.folder}: {pulled.files} files, "
              f"{_size(pulled.size)}{checked}{extra}, in {pulled.seconds:.2f} s")
    return 0


def _verify_keys(paths: tuple[Path, ...]) -> list[Path]:
    if not paths:
        return []
    from zooserve.repository.signing import verify_keys  # the extra is imported when used

    try:
        return verify_keys(paths)
    except ValueError as exc:
        raise SystemExit(f"zooserve pull: error: --verify-key: {exc}") from None


def _size(count: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"


def _add_registry_flags(parser: argparse.ArgumentParser) -> None:
    from zooserve.serving.settings import add_flags

    add_flags(parser, ["models"])
    parser.add_argument("--plain-http", action="store_true",
                        help="speak plain HTTP to the registry (one on loopback), not HTTPS")
    parser.add_argument("--tls-ca", help="trust this CA (PEM) for the registry's certificate")


def add_registry_commands(commands: argparse._SubParsersAction) -> None:
    credentials = ("Credentials: ZOOSERVE_REGISTRY_USERNAME and ZOOSERVE_REGISTRY_PASSWORD, "
                   "else Docker's config.json ($DOCKER_CONFIG, else ~/.docker; `docker login` "
                   "writes it).")
    push = commands.add_parser(
        "push", help="push a model version (or a library and its model) to an OCI registry",
        description="Pushes every file of a repository version as an OCI artifact, annotated "
        "from its card. A reference without a tag gets the version number. " + credentials)
    push.add_argument("model", help="NAME or NAME:VERSION [the highest version]")
    push.add_argument("reference", help="HOST[:PORT]/REPOSITORY[:TAG]")
    _add_registry_flags(push)
    push.set_defaults(func=_push)

    pull = commands.add_parser(
        "pull", help="pull models pushed with `zooserve push` into the repository",
        description="Fetches each artifact, checks every file's sha256 and the card, and "
        "publishes it as the next version of its model (a library's embedding model at the "
        "version the library names). On any refusal nothing is written. " + credentials)
    pull.add_argument("references", nargs="+", metavar="REFERENCE",
                      help="HOST[:PORT]/REPOSITORY[:TAG|@sha256:DIGEST]")
    pull.add_argument("--name", help="the model name to publish under [the artifact's]")
    pull.add_argument("--verify-key", action="append", metavar="PUBLIC.pem",
                      help="publish only if the signature verifies against this key (or a "
                      "folder of keys); repeatable [ZOOSERVE_VERIFY_KEY, paths separated by "
                      f"{os.pathsep!r}]")
    _add_registry_flags(pull)
    pull.set_defaults(func=_pull)


