"""`zooserve`: serve the model repository, list it, ask a running server for predictions,
and (with the `train` extra) train and export the lesson's models.

Every server setting also reads from a ZOOSERVE_<NAME> environment variable; flags win."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import NoReturn


class _Parser(argparse.ArgumentParser):
    """argparse, but a mistake is one line on stderr, not the whole usage."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _serve(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from zooserve.serving.settings import Settings

    # Every Settings field with a flag of its own name; the flags left unset read None.
    flags = {f.name: getattr(args, f.name, None) for f in fields(Settings)}
    settings = Settings.from_sources(flags)
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if not settings.models.is_dir():
        raise SystemExit(f"zooserve serve: error: models folder '{settings.models}' does not exist")
    from zooserve.serving.onnx_sessions import DeviceUnavailable
    from zooserve.serving.server import serve

    try:
        serve(settings)
    except (OSError, DeviceUnavailable) as exc:  # a port in use; --device cuda without CUDA
        raise SystemExit(f"zooserve serve: error: {exc}") from None
    return 0


def _models(args: argparse.Namespace) -> int:
    from zooserve.repository.layout import scan_repository
    from zooserve.serving.settings import Settings

    root = Settings.from_sources({"models": args.models}).models
    try:
        entries = scan_repository(root)
    except FileNotFoundError as exc:
        raise SystemExit(f"zooserve models: error: {exc}") from None
    rows = [("NAME", "VERSION", "TASK", "METRIC", "DESCRIPTION")]
    for entry in entries:
        card = entry.read_card()
        key = card.get("primary_metric", "")
        value = card.get("metrics", {}).get(key)
        metric = f"{key}={value:.4g}" if isinstance(value, int | float) else "-"
        rows.append((entry.name, str(entry.version), card.get("task", "-"), metric,
                     card.get("description", "")))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[4])
    return 0


def _token(args: argparse.Namespace, command: str) -> str | None:
    """The bearer token to send: --token-file, else the server's own sources, read the same
    way (ZOOSERVE_AUTH_TOKEN_FILE, else ZOOSERVE_AUTH_TOKEN; a trailing newline is dropped
    by the client)."""
    import os
    from pathlib import Path

    token_file = args.token_file or os.environ.get("ZOOSERVE_AUTH_TOKEN_FILE")
    try:
        token = (Path(token_file).read_text() if token_file
                 else os.environ.get("ZOOSERVE_AUTH_TOKEN"))
    except OSError as exc:
        raise SystemExit(f"zooserve {command}: error: cannot read the token file: {exc}") from None
    return token or None


def _predict(args: argparse.Namespace) -> int:
    from zooserve.client import Client, ClientError

    try:
        values = json.loads(args.inputs)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"zooserve predict: error: --inputs is not JSON: {exc}") from None
    token = _token(args, "predict")
    try:
        with Client(args.url, args.timeout, tls=_wants_tls(args, "predict"),
                    root_certificates=args.tls_ca,
                    client_certificate=args.tls_client_cert, client_key=args.tls_client_key,
                    server_name=args.tls_server_name, token=token) as client:
            result = client.predict(args.model, values, args.model_version)
    except ClientError as exc:
        said = f"{exc.code}: {exc}" if exc.code else str(exc)
        raise SystemExit(f"zooserve predict: error: {said}") from None
    print(result.describe())
    return 0


def _search(args: argparse.Namespace) -> int:
    """Exit 2 for a mistake of the caller's (flags, the MGF file, the token file, what the
    client refuses before sending), 1 for one the server answers."""
    from zooserve.client import Client, ClientError
    from zooserve.spectra.mgf import read_mgf

    def fail(message: str, status: int) -> NoReturn:
        print(f"zooserve search: error: {message}", file=sys.stderr)
        raise SystemExit(status)

    try:
        queries = list(read_mgf(args.queries))
    except OSError as exc:
        fail(f"cannot read {args.queries}: {exc.strerror or exc}", 2)
    except ValueError as exc:  # MgfError names the file and line; a file that is not text
        said = str(exc)
        fail(said if said.startswith(args.queries) else f"{args.queries}: {said}", 2)
    if not queries:
        fail(f"{args.queries} holds no spectra (no BEGIN IONS ... END IONS)", 2)
    try:
        tls = _wants_tls(args, "search")
        token = _token(args, "search")
    except SystemExit as exc:  # their one line, as a usage error
        fail(str(exc.code).removeprefix("zooserve search: error: "), 2)
    try:
        with Client(args.url, args.timeout, tls=tls, root_certificates=args.tls_ca,
                    client_certificate=args.tls_client_cert, client_key=args.tls_client_key,
                    server_name=args.tls_server_name, token=token) as client:
            results = client.search(
                args.library, queries, args.top_k, precursor_tolerance=args.precursor_tolerance,
                min_score=args.min_score, timeout=args.timeout)
    except ClientError as exc:
        if exc.code is None:
            fail(str(exc), 2)
        fail(f"{exc.code}: {exc}", 1)
    print(results.describe())
    return 0


def _health(args: argparse.Namespace) -> int:
    from zooserve.serving.grpc_frontend.health_check import health_status

    url = args.url
    if url is None:
        from zooserve.serving.settings import Settings

        url = f"localhost:{Settings.from_sources().grpc_port}"
    try:
        credentials = None
        if _wants_tls(args, "health"):
            from zooserve.protocol.credentials import tls_credentials

            credentials = tls_credentials(args.tls_ca, args.tls_client_cert, args.tls_client_key)
        status = health_status(url, args.service, args.timeout, credentials,
                               args.tls_server_name)
    except OSError as exc:  # ConnectionError, or a TLS file that cannot be read
        raise SystemExit(f"zooserve health: error: {exc}") from None
    print(status)
    return 0 if status == "SERVING" else 1


def _add_tls_flags(parser: argparse.ArgumentParser) -> None:
    """The flags `predict` and `health` take to reach a server over TLS."""
    parser.add_argument("--tls", action="store_true",
                        help="TLS, trusting the system's CAs (implied by the --tls-* flags)")
    parser.add_argument("--tls-ca", help="TLS, trusting the CA (PEM) that signed the server's "
                        "certificate")
    parser.add_argument("--tls-server-name",
                        help="the name the server's certificate carries, if not the URL's host")
    parser.add_argument("--tls-client-cert", help="client certificate (PEM), for mutual TLS")
    parser.add_argument("--tls-client-key", help="its private key (PEM)")


def _wants_tls(args: argparse.Namespace, command: str) -> bool:
    """Whether the TLS flags ask for TLS; a client certificate without its key (or the
    reverse) is refused here, naming the flags."""
    if (args.tls_client_cert is None) != (args.tls_client_key is None):
        raise SystemExit(f"zooserve {command}: error: a client certificate needs both "
                         "--tls-client-cert and --tls-client-key")
    return bool(args.tls or args.tls_ca or args.tls_client_cert)


def build_parser() -> argparse.ArgumentParser:
    from zooserve.serving.settings import add_flags

    parser = _Parser(prog="zooserve", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve = commands.add_parser(
        "serve", help="serve the model repository over gRPC and HTTP (Open Inference Protocol)"
    )
    add_flags(serve)
    serve.set_defaults(func=_serve)

    models = commands.add_parser("models", help="list the models in the repository")
    add_flags(models, ["models"])
    models.set_defaults(func=_models)

    predict = commands.add_parser("predict", help="ask a running server for a prediction")
    predict.add_argument("model", help="model name, e.g. penguins")
    predict.add_argument(
        "--inputs",
        required=True,
        help="JSON: a nested list for a one-input model, or {\"input name\": nested list}",
    )
    predict.add_argument("--url", default="localhost:8001", help="server address [localhost:8001]")
    predict.add_argument("--model-version", default="", help="version [the highest]")
    predict.add_argument("--timeout", type=float, default=10.0, help="seconds [10]")
    _add_tls_flags(predict)
    predict.add_argument(
        "--token-file", help="file holding the bearer token to send [ZOOSERVE_AUTH_TOKEN_FILE; "
        "or the token itself in ZOOSERVE_AUTH_TOKEN]",
    )
    predict.set_defaults(func=_predict)

    health = commands.add_parser(
        "health", help="ask a running server's gRPC health service; exit 0 when SERVING"
    )
    health.add_argument("--url", help="server address [localhost:ZOOSERVE_GRPC_PORT]")
    health.add_argument("--service", default="", help="a model name, or '' for the server ['']")
    health.add_argument("--timeout", type=float, default=3.0, help="seconds [3]")
    _add_tls_flags(health)
    health.set_defaults(func=_health)

    from zooserve.image import add_image_commands

    add_image_commands(commands)

    # `sign`: in the base install; without the `signing` extra it says what to install.
    from zooserve.repository.cli import add_signing_commands

    add_signing_commands(commands)

    from zooserve.registry.cli import add_registry_commands

    add_registry_commands(commands)

    try:
        from zooserve.serving.search.cli import add_library_commands
    except ImportError:  # a client-only install
        pass
    else:
        add_library_commands(commands)

    search = commands.add_parser(
        "search", help="ask a running server for the library spectra most like those of an "
        "MGF file")
    search.add_argument("queries", help="MGF file of query spectra")
    search.add_argument("--library", required=True, help="the library (search model) name")
    search.add_argument("--url", default="localhost:8001", help="server address [localhost:8001]")
    search.add_argument("--top-k", type=int, default=5, help="matches per query [5]")
    search.add_argument("--precursor-tolerance", type=float,
                        help="only entries whose precursor m/z is within this of the query's")
    search.add_argument("--min-score", type=float, help="only matches scoring at least this")
    search.add_argument("--timeout", type=float, default=30.0, help="seconds [30]")
    _add_tls_flags(search)
    search.add_argument("--token-file", help="file holding the bearer token to send")
    search.set_defaults(func=_search)

    try:
        from zooserve.training.cli import add_training_commands
    except ImportError:  # a serving-only install
        add_training_commands = _training_missing
    add_training_commands(commands)

    try:
        from zooserve.serving.bento_frontend.cli import add_bento_commands
    except ImportError:  # no `bento` extra: no `zooserve bento ...`
        pass
    else:
        add_bento_commands(commands)
    return parser


def _training_missing(commands) -> None:
    def refuse(args: argparse.Namespace) -> int:
        raise SystemExit(
            "zooserve: error: training needs the `train` extra: pip install -e '.[train]'"
        )

    for name in ("train", "export", "results"):
        sub = commands.add_parser(name, help="(needs the train extra)")
        sub.add_argument("rest", nargs="*")
        sub.set_defaults(func=refuse)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from zooserve.serving.settings import SettingsError

    try:
        return args.func(args)
    except SettingsError as exc:
        print(f"zooserve {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
