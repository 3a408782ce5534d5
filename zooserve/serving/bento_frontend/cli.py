"""`zooserve bento ...`: the commands of the BentoML frontend.

Only argparse at import: `zooserve --help` must not pay for importing BentoML."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

# The project root: the build context of a Bento (zooserve/ and bentofile.yaml live there).
PROJECT = Path(__file__).resolve().parents[3]
BENTO_ARGUMENT = "models"  # the Bento argument startup.py reads: which stored models to declare


def add_bento_commands(commands: argparse._SubParsersAction) -> None:
    bento = commands.add_parser(
        "bento", help="BentoML: put the zoo into BentoML's model store, build a Bento of it"
    )
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

    build = actions.add_parser(
        "build",
        help="import the repository's models (or --only some) and build a Bento of exactly them",
        description="Imports the chosen models of the repository into BentoML's model store "
        "(as `zooserve bento import`), builds a Bento from the project's bentofile that "
        "carries exactly those models, and prints its tag and models. Refuses, building "
        "nothing, when there is no model to carry or the store holds a different model "
        "under one of the tags.",
    )
    build.add_argument("--models", help="model repository folder [ZOOSERVE_MODELS, models]")
    build.add_argument(
        "--only",
        nargs="+",
        action="extend",
        metavar="NAME",
        help="only these models, every version of each [all of the repository]",
    )
    build.add_argument(
        "--force", action="store_true", help="replace a stored model whose file differs"
    )
    build.add_argument(
        "-f",
        "--bentofile",
        help=f"bentofile [{PROJECT / 'bentofile.yaml'}; bentofile.gpu.yaml for the GPU Bento]",
    )
    build.set_defaults(func=_build)


def _repository_root(args: argparse.Namespace, command: str) -> Path:
    from zooserve.serving.settings import Settings

    root = Settings.from_sources({"models": args.models}).models
    if not root.is_dir():
        raise SystemExit(f"zooserve bento {command}: error: models folder '{root}' does not exist")
    return root


def _print_imports(results) -> None:
    width = max(len(r.tag) for r in results)
    for result in results:
        line = f"{result.tag.ljust(width)}  {result.action}"
        print(line + (f": {result.detail}" if result.detail else ""))


def _import(args: argparse.Namespace) -> int:
    root = _repository_root(args, "import")

    from bentoml._internal.configuration.containers import BentoMLContainer

    from zooserve.serving.bento_frontend.store import import_repository

    results = import_repository(root, force=args.force)
    if not results:
        raise SystemExit(f"zooserve bento import: error: no models found under '{root}'")
    _print_imports(results)
    print(f"model store: {BentoMLContainer.model_store_dir.get()}")
    return 1 if any(r.action == "skipped" for r in results) else 0


def _build(args: argparse.Namespace) -> int:
    def fail(message: str) -> SystemExit:
        return SystemExit(f"zooserve bento build: error: {message}")

    root = _repository_root(args, "build")
    bentofile = Path(args.bentofile).resolve() if args.bentofile else PROJECT / "bentofile.yaml"
    if not bentofile.is_file():
        raise fail(f"bentofile '{bentofile}' does not exist")

    from zooserve.repository.layout import select_models

    try:
        chosen = select_models(root, args.only)
    except LookupError as exc:
        raise fail(str(exc)) from None
    if not chosen:
        raise fail(f"no models found under '{root}': nothing to build a Bento of")

    import bentoml

    from zooserve.serving.bento_frontend.store import import_repository

    results = import_repository(root, force=args.force, names=args.only)
    _print_imports(results)
    if any(r.action == "skipped" for r in results):
        raise fail("not built: the models marked skipped above could not be stored as they are "
                   "(each one's line says why)")
    tags = sorted(r.tag for r in results)

    try:  # from the project root: BentoML reads the bentofile's files relative to it
        with contextlib.chdir(PROJECT):
            bento = bentoml.bentos.build_bentofile(
                str(bentofile), build_ctx=str(PROJECT), args={BENTO_ARGUMENT: ",".join(tags)}
            )
    except bentoml.exceptions.BentoMLException as exc:
        raise fail(str(exc)) from None
    carried = sorted({str(m.tag) for m in bento.info.all_models})
    if carried != tags:  # the service must declare exactly what was asked for
        bentoml.bentos.delete(bento.tag)
        raise fail(f"the Bento carried {carried}, not {tags}; deleted it")
    print(f"bento:  {bento.tag}")
    print(f"models: {' '.join(carried)}")
    return 0
