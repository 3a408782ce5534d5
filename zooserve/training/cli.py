"""`train`, `export` and `results` subcommands, added to the zooserve CLI's parser.

Nothing heavy is imported here: TensorFlow loads only when `train` or `export` actually runs,
so the serving CLI starts fast.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

from zooserve.training.recipes import MODEL_NAMES

DEFAULT_LEDGER = "results/ledger.csv"


def add_training_commands(subparsers) -> None:
    """Add `train NAME`, `export PATH` and `results` to an argparse subparsers object."""
    train = subparsers.add_parser(
        "train",
        help="train a model, export it to ONNX and add it to the model repository",
        description=(
            "Train a model of the zoo, export it to ONNX (parity-checked against Keras), and "
            "write it with its card and plots as a new version under MODELS/NAME/. "
            "spectra_similarity and spectra_embedding come from one siamese training run: "
            "training either name ships both."
        ),
    )
    train.add_argument("name", metavar="NAME", choices=MODEL_NAMES, help=", ".join(MODEL_NAMES))
    _add_repository_options(train)
    train.add_argument(
        "--overwrite", action="store_true",
        help="replace the highest version instead of adding a new version folder",
    )  # fmt: skip
    train.add_argument("--epochs", type=_positive, help="cap the number of epochs")
    train.add_argument(
        "--subset", type=_positive,
        help="train and test on the first N samples of each split only (quick runs)",
    )  # fmt: skip
    train.add_argument(
        "--data",
        help=(
            "the lesson's real data: weather_prediction_dataset_light.csv (weather), the folder "
            "of Dollar Street's four .npy files (digits, digits_transfer), an MGF file with "
            "its Tanimoto JSON beside it (spectra_*)"
        ),
    )
    train.add_argument(
        "--weights",
        help="local Keras file for the transfer base (.keras or .weights.h5); never downloaded",
    )
    train.add_argument(
        "--seed", type=int, default=0,
        help="seed for weights, shuffling and simulated or sampled data (default 0)",
    )  # fmt: skip
    train.add_argument(
        "--verbose", action="store_true",
        help="show Keras's line per epoch, model summaries and TensorFlow's own logs",
    )  # fmt: skip
    train.set_defaults(func=run_train)

    _add_export_command(subparsers)

    results = subparsers.add_parser("results", help="print the results ledger, newest first")
    results.add_argument("--ledger", default=DEFAULT_LEDGER, help=f"default {DEFAULT_LEDGER}")
    results.set_defaults(func=run_results)


def _add_export_command(subparsers) -> None:
    export = subparsers.add_parser(
        "export",
        help="add your own trained Keras model to the model repository (ONNX, parity, card)",
        description=(
            "Export a Keras model trained elsewhere (.keras, legacy .h5, or a TensorFlow "
            "SavedModel folder) to ONNX, check it against Keras (on --test, else on 64 "
            "generated rows), and write it with a model card as a new version under "
            "MODELS/NAME/. On any error nothing is written."
        ),
    )
    export.add_argument("path", metavar="PATH", help="the .keras or .h5 file, or SavedModel folder")
    export.add_argument("--name", required=True, help="model name in the repository")
    export.add_argument(
        "--labels", help="class labels in output order: a comma list, or a file with one a line"
    )
    export.add_argument("--description", help="one sentence for the card")
    export.add_argument(
        "--input-names", help="served input names, comma list (default: the model's)"
    )
    export.add_argument("--output-name", help="served output name (default: the model's)")
    export.add_argument(
        "--feature-names", help="tabular input's column names, comma list (stored in the card)"
    )
    export.add_argument(
        "--test",
        help="measure on this file: a CSV (with --target) or an .npz with arrays x and y",
    )
    export.add_argument("--target", help="the CSV test file's label column")
    export.add_argument(
        "--task", choices=["classification", "regression", "other"],
        help="default: classification when --labels are given or the output is probabilities",
    )  # fmt: skip
    export.add_argument(
        "--custom-objects", metavar="MODULE.py",
        help="Python file whose classes and functions are the model's custom layers etc.",
    )  # fmt: skip
    _add_repository_options(export)
    export.add_argument(
        "--tolerance", type=float, default=None,
        help="largest ONNX-vs-Keras difference allowed (default 1e-4)",
    )  # fmt: skip
    export.add_argument(
        "--input-range", metavar="LOW,HIGH",
        help="without --test, check parity on inputs uniform in this range (default N(0, 1))",
    )  # fmt: skip
    export.add_argument(
        "--allow-lambda", action="store_true",
        help="load Lambda layers' Python code (Keras safe mode off): only for files you trust",
    )  # fmt: skip
    export.add_argument(
        "--verbose", action="store_true", help="show TensorFlow's and tf2onnx's own logs"
    )
    export.set_defaults(func=run_export)


def _add_repository_options(parser: argparse.ArgumentParser) -> None:
    """Where `train` and `export` write: the model repository and the results ledger; and
    the key that signs what they write."""
    parser.add_argument(
        "--models",
        default=os.environ.get("ZOOSERVE_MODELS", "models"),
        help="model repository folder (default: $ZOOSERVE_MODELS, else ./models)",
    )
    parser.add_argument("--ledger", default=DEFAULT_LEDGER, help=f"default {DEFAULT_LEDGER}")
    parser.add_argument(
        "--sign-key", metavar="PRIVATE.pem",
        help="sign each new version with this EC private key (PEM) before it is published "
        "(model.sig; needs the signing extra)",
    )  # fmt: skip


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


# What `train` needs beyond the base install. onnxruntime (for the parity check) comes from the
# `serve` or `gpu` extra, not `train`: those two must stay alternatives.
TRAINING_MODULES = ["tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "pandas", "sklearn"]


def run_train(args: argparse.Namespace) -> int:
    missing = [name for name in TRAINING_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        print(
            f"error: training needs {', '.join(missing)}: pip install -e '.[train,serve]'",
            file=sys.stderr,
        )
        return 2
    if args.sign_key is not None:  # a key that cannot sign stops here, before any training
        from zooserve.repository.signing import SigningError, check_private_key

        try:
            check_private_key(Path(args.sign_key))
        except SigningError as error:
            print(f"error: --sign-key: {error}", file=sys.stderr)
            return 2
    _start_tensorflow(args.verbose)
    from zooserve.training.data.dataset import DataFileMissing
    from zooserve.training.export import ParityError
    from zooserve.training.pipeline import train
    from zooserve.training.spec import TrainOptions

    if args.weights and args.name != "digits_transfer":
        print(f"error: --weights only applies to digits_transfer, not {args.name}", file=sys.stderr)
        return 2
    options = TrainOptions(
        models=Path(args.models),
        ledger=Path(args.ledger),
        overwrite=args.overwrite,
        epochs=args.epochs,
        subset=args.subset,
        data=args.data,
        weights=args.weights,
        seed=args.seed,
        verbose=args.verbose,
        sign_key=Path(args.sign_key) if args.sign_key is not None else None,
    )
    try:
        folders = train(args.name, options)
    except DataFileMissing as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except ParityError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.verbose:  # quiet runs already said where each model went
        for folder in folders:
            print(f"wrote {folder}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    """`zooserve export`: exit 0 when shipped, 2 for a mistake in what was given, 1 when the
    ONNX model does not compute what Keras computes."""
    missing = [name for name in TRAINING_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        return _export_error(f"needs {', '.join(missing)}: pip install -e '.[train,serve]'", 2)
    from zooserve.training.share import check_request
    from zooserve.training.user_model import UserModelError

    try:
        request = _export_request(args)
        check_request(request)  # the mistakes visible before TensorFlow loads
    except UserModelError as error:
        return _export_error(str(error), 2)
    _start_tensorflow(args.verbose)
    _quiet_export_logs(args.verbose)
    from zooserve.training.export import ParityError
    from zooserve.training.share import export_user_model

    try:
        folder = export_user_model(request)
    except UserModelError as error:
        return _export_error(str(error), 2)
    except ParityError as error:
        return _export_error(str(error), 1)
    print(f"{request.name}: exported {args.path} to {folder}; ledger row in {request.ledger}")
    return 0


def _export_request(args: argparse.Namespace):
    from zooserve.training.share import EXPORT_PARITY_TOLERANCE, ExportRequest

    return ExportRequest(
        source=Path(args.path),
        name=args.name,
        models=Path(args.models),
        ledger=Path(args.ledger),
        labels=_labels(args.labels) if args.labels is not None else None,
        description=args.description,
        input_names=_comma_list(args.input_names, "--input-names"),
        output_name=args.output_name,
        feature_names=_comma_list(args.feature_names, "--feature-names"),
        test=Path(args.test) if args.test else None,
        target=args.target,
        custom_objects=Path(args.custom_objects) if args.custom_objects else None,
        task=args.task,
        tolerance=EXPORT_PARITY_TOLERANCE if args.tolerance is None else args.tolerance,
        input_range=_range(args.input_range),
        allow_lambda=args.allow_lambda,
        sign_key=Path(args.sign_key) if args.sign_key is not None else None,
    )


def _comma_list(text: str | None, option: str) -> list[str] | None:
    from zooserve.training.user_model import UserModelError

    if text is None:
        return None
    items = [item.strip() for item in text.split(",")]
    if not all(items):
        raise UserModelError(f"{option} has an empty entry: {text!r}")
    return items


def _labels(text: str) -> list[str]:
    """A file with one label a line when `text` names one, else a comma list."""
    from zooserve.training.user_model import UserModelError

    path = Path(text)
    if path.is_file():
        labels = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if not labels:
            raise UserModelError(f"--labels {text}: the file has no labels")
        return labels
    return _comma_list(text, "--labels")


def _range(text: str | None) -> tuple[float, float] | None:
    from zooserve.training.user_model import UserModelError

    if text is None:
        return None
    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError:
        raise UserModelError(f"--input-range wants LOW,HIGH, got {text!r}") from None
    if not low < high:
        raise UserModelError(f"--input-range: LOW must be below HIGH, got {text!r}")
    return low, high


def _start_tensorflow(verbose: bool) -> None:
    """Import TensorFlow with its C++ log level set: quiet hides even its errors (the harmless
    `NodeDef mentions attribute` lines of every export), --verbose keeps them, and a value the
    user set wins. The level is read once, at import, and enforced on fd 2 as well, because on
    CPUs with AVX-512 TensorFlow writes start-up lines the level does not stop."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2" if verbose else "3")
    from zooserve.training.native_stderr import import_tensorflow

    import_tensorflow()


def _quiet_export_logs(verbose: bool) -> None:
    """Without --verbose, errors become one line of ours: tf2onnx's own error lines (for the
    ops it cannot convert) are hidden too."""
    if verbose:
        return
    import logging

    from zooserve.training.progress import quiet_library_logs

    quiet_library_logs()
    logging.getLogger("tf2onnx").setLevel(logging.CRITICAL)


def _export_error(message: str, status: int) -> int:
    print(f"zooserve export: error: {message}", file=sys.stderr)
    return status


def run_results(args: argparse.Namespace) -> int:
    from zooserve.training import ledger

    rows = ledger.read(Path(args.ledger))
    if not rows:
        print(f"no results yet in {args.ledger}")
        return 0
    print(ledger.table(rows))
    return 0
