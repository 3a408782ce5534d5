"""`train` and `results` subcommands, added to the zooserve CLI's parser.

Nothing heavy is imported here: TensorFlow loads only when `train` actually runs, so the
serving CLI starts fast.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

from training.recipes import MODEL_NAMES

DEFAULT_LEDGER = "results/ledger.csv"


def add_training_commands(subparsers) -> None:
    """Add `train NAME` and `results` to an argparse subparsers object."""
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
    train.add_argument(
        "--models",
        default=os.environ.get("ZOOSERVE_MODELS", "models"),
        help="model repository folder (default: $ZOOSERVE_MODELS, else ./models)",
    )
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
    train.add_argument("--ledger", default=DEFAULT_LEDGER, help=f"default {DEFAULT_LEDGER}")
    train.add_argument(
        "--seed", type=int, default=0,
        help="seed for weights, shuffling and simulated or sampled data (default 0)",
    )  # fmt: skip
    train.add_argument(
        "--verbose", action="store_true",
        help="show Keras's line per epoch, model summaries and TensorFlow's own logs",
    )  # fmt: skip
    train.set_defaults(func=run_train)

    results = subparsers.add_parser("results", help="print the results ledger, newest first")
    results.add_argument("--ledger", default=DEFAULT_LEDGER, help=f"default {DEFAULT_LEDGER}")
    results.set_defaults(func=run_results)


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
    # TensorFlow's C++ logging reads this once, when TensorFlow is imported: set it first.
    # Quiet hides even its errors (the harmless `NodeDef mentions attribute` lines of every
    # export); --verbose keeps them. A value the user set wins.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2" if args.verbose else "3")
    from training.data.dataset import DataFileMissing
    from training.export import ParityError
    from training.pipeline import train
    from training.spec import TrainOptions

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


def run_results(args: argparse.Namespace) -> int:
    from training import ledger

    rows = ledger.read(Path(args.ledger))
    if not rows:
        print(f"no results yet in {args.ledger}")
        return 0
    print(ledger.table(rows))
    return 0
