"""`zooserve bento ...`: the commands of the BentoML frontend.

Only argparse at import: `zooserve --help` must not pay for importing BentoML."""

from __future__ import annotations

import argparse


def add_bento_commands(commands: argparse._SubParsersAction) -> None:
    bento = commands.add_parser("bento", help="BentoML: put the zoo into BentoML's model store")
    actions = bento.add_subparsers(dest="bento_command", required=True)

    imports = actions.add_parser(
        "import",
        help="put every repository model into BentoML's model store ($BENTOML_HOME)",
        description="Each <name>/<version>/ of the repository becomes the BentoML model "
        "<name>:<version> (model.onnx and card.json; the card also as metadata). "
        "A tag already in the store with the same model.onnx is left as it is.",
    )
    imports.add_argument("--models", help="model repository folder [ZOOSERVE_MODELS, models]")
    imports.add_argument(
        "--force", action="store_true", help="replace a stored model whose file differs"
    )
    imports.set_defaults(func=_import)


def _import(args: argparse.Namespace) -> int:
    from service.settings import Settings

    root = Settings.from_sources({"models": args.models}).models
    if not root.is_dir():
        raise SystemExit(f"zooserve bento import: error: models folder '{root}' does not exist")

    from bentoml._internal.configuration.containers import BentoMLContainer

    from service.bento_frontend.store import import_repository

    results = import_repository(root, force=args.force)
    if not results:
        raise SystemExit(f"zooserve bento import: error: no models found under '{root}'")
    width = max(len(r.tag) for r in results)
    for result in results:
        line = f"{result.tag.ljust(width)}  {result.action}"
        print(line + (f": {result.detail}" if result.detail else ""))
    print(f"model store: {BentoMLContainer.model_store_dir.get()}")
    return 1 if any(r.action == "skipped" for r in results) else 0
