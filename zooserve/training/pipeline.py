"""`zooserve train NAME`, top to bottom: load, build, fit, evaluate, export, ship.

Shipping a model means: convert to ONNX, check parity against Keras on the whole test set,
draw the plots, write the card, move the folder into place as a new version (or over the
highest one with `overwrite`), and append a row to the results ledger.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from zooserve.repository.layout import (
    FILES_KEY,
    MODEL_FILE,
    file_hashes,
    write_card,
)
from zooserve.repository.publish import publish_version
from zooserve.repository.signing import sign_version
from zooserve.spectra.binning import METADATA_KEY as BINNING_KEY
from zooserve.training import export, fitting, ledger, plots, provenance
from zooserve.training.data.dataset import Arrays, Dataset
from zooserve.training.recipes import lookup
from zooserve.training.spec import CardText, ModelSpec, TrainOptions


@dataclass(frozen=True)
class Run:
    """What one training run produced, shared by every model it ships."""

    dataset: Dataset
    history: dict
    epochs_run: int
    fit_seconds: float
    settings: fitting.FitSettings
    baselines: dict
    notes: dict


def train(name: str, options: TrainOptions) -> list[Path]:
    """Train the named model and ship it (and its companions); returns the version folders."""
    spec = lookup(name)
    if spec.trained_by:
        print(f"{name} is shipped by the {spec.trained_by} run: training that")
        spec = lookup(spec.trained_by)
    if not options.verbose:
        from zooserve.training.progress import quiet_library_logs

        quiet_library_logs()

    # Prepare data.
    fitting.set_seeds(options.seed)
    dataset = spec.load(options).subset(options.subset)
    print(f"{spec.name}: {dataset.name}, {len(dataset.y_train)} train / {dataset.test_rows} test")

    # Build, compile, fit.
    settings = replace(spec.fit, seed=options.seed).capped(options.epochs)
    notes: dict[str, object] = {}
    model = spec.build(dataset, options, notes)
    if options.verbose:
        model.summary()
    history, epochs_run, seconds = fitting.fit(
        model, dataset.x_train, dataset.y_train, settings, label=spec.name,
        verbose=options.verbose,
    )  # fmt: skip

    # Evaluate on the held-out test split, next to the baselines.
    y_pred = fitting.predict(model, dataset.x_test)
    metrics = fitting.score(_score_task(spec.task), dataset.y_test, y_pred)
    fitting.report(spec.name, spec.task, dataset, y_pred, metrics, show_confusion=options.verbose)
    baselines = spec.baselines(dataset, options, settings) if spec.baselines else {}
    run = Run(dataset, history, epochs_run, seconds, settings, baselines, notes)
    _compare(spec, metrics, baselines)

    # Export and ship.
    folders = [ship(spec, model, run, dataset.x_test, dataset.y_test, y_pred, metrics, options)]
    for companion in spec.companions(model, dataset) if spec.companions else []:
        companion_spec = lookup(companion.name)
        print(f"\n{companion.name} (same run): {companion.metrics}")
        folders.append(
            ship(
                companion_spec, companion.model, run, companion.x_test, companion.y_true,
                companion.y_score, companion.metrics, options,
            )
        )  # fmt: skip
    return folders


def _score_task(task: str) -> str:
    return "classification" if task == "classification" else "regression"


def _compare(spec: ModelSpec, metrics: dict, baselines: dict) -> None:
    key = spec.primary_metric
    for name, values in baselines.items():
        ours, theirs = metrics[key], values[key]
        better = ours > theirs if spec.higher_is_better else ours < theirs
        verdict = "beats" if better else "DOES NOT beat"
        print(f"{spec.name} {verdict} the {name} baseline: {key} {ours} vs {theirs}")


def beats_baselines(spec: ModelSpec, metrics: dict, baselines: dict) -> bool:
    key = spec.primary_metric
    if spec.higher_is_better:
        return all(metrics[key] > b[key] for b in baselines.values())
    return all(metrics[key] < b[key] for b in baselines.values())


def ship(
    spec: ModelSpec,
    model,
    run: Run,
    x_test: Arrays,
    y_true: np.ndarray,
    y_score: np.ndarray,
    metrics: dict,
    options: TrainOptions,
) -> Path:
    """Export, check, plot, card, move into the repository, ledger row. Returns the folder."""
    labels = run.dataset.labels if spec.task == "classification" else None
    text = spec.describe(run.dataset)
    # Built in a hidden staging folder (skipped by the server), then moved in as one rename.
    with publish_version(options.models / spec.name, overwrite=options.overwrite) as staged:
        staging, version = staged.folder, staged.version
        input_names = list(text.inputs)
        metadata = {}
        if text.input_binning is not None:
            metadata[BINNING_KEY] = json.dumps(text.input_binning, sort_keys=True)
        proto = export.convert(model, input_names, text.output[0], labels, metadata)
        onnx_path = staging / MODEL_FILE
        sha256 = export.save(proto, onnx_path)
        expected = fitting.predict(model, x_test)
        difference = export.check_parity(expected, onnx_path, input_names, x_test)
        if options.verbose:
            print(
                f"{spec.name}: ONNX parity on {len(expected)} test samples, "
                f"max |diff| {difference:.2g}"
            )
        pngs = _plots(spec, run, y_true, y_score, labels, staging)
        card = _card(spec, text, version, proto, sha256, difference, run, metrics, labels, pngs)
        card[FILES_KEY] = file_hashes(staging)  # every file, the plots too: a load checks them
        write_card(staging, card)
        if options.sign_key is not None:  # signed before it is published, never after
            sign_version(staging, options.sign_key)
    target = staged.target
    ledger.append(
        options.ledger,
        {
            "created": card["created"],
            "model": spec.name,
            "version": version,
            "task": spec.task,
            "description": text.description,
            "metrics": metrics,
            "baselines": run.baselines,
            "test_set": run.dataset.name,
            "test_rows": card["dataset"]["test_rows"],
            "test_sha256": card["dataset"]["test_sha256"],
            "git_commit": card["git_commit"],
            "epochs_run": run.epochs_run,
            "fit_seconds": round(run.fit_seconds, 1),
        },
    )
    size = (target / MODEL_FILE).stat().st_size
    print(
        f"{spec.name}: shipped {target}/{MODEL_FILE} ({size} bytes, ONNX parity "
        f"{difference:.2g}); ledger row in {options.ledger}"
    )
    return target


def _plots(spec, run: Run, y_true, y_score, labels, folder: Path) -> list[str]:
    title = f"{spec.name} ({run.dataset.name})"
    files = [plots.training_curves(run.history, folder / "training_curves.png", title)]
    if spec.task == "classification":
        matrix = fitting.confusion(y_true, y_score, len(labels))
        files.append(plots.confusion_matrix(matrix, labels, folder / "confusion_matrix.png", title))
    else:
        files.append(
            plots.predicted_vs_true(y_true, y_score, folder / "predicted_vs_true.png", title)
        )
    return [f.name for f in files]


def _card(
    spec: ModelSpec, text: CardText, version, proto, sha256, difference, run: Run, metrics,
    labels, pngs,
) -> dict:  # fmt: skip
    dataset = run.dataset
    described = {**text.inputs, text.output[0]: text.output[1]}
    inputs, outputs = export.tensor_entries(proto, described)
    card = {
        "name": spec.name,
        "version": version,
        "task": spec.task,
        "description": text.description,
        "inputs": inputs,
        "outputs": outputs,
    }
    if labels is not None:
        card["labels"] = labels
    if dataset.feature_names:  # tabular inputs only
        card["feature_names"] = dataset.feature_names
    if text.input_binning is not None:
        card[BINNING_KEY] = text.input_binning
    card["metrics"] = metrics
    card["primary_metric"] = spec.primary_metric
    if run.baselines:
        card["baselines"] = run.baselines
        card["beats_baselines"] = beats_baselines(spec, metrics, run.baselines)
    card["dataset"] = {
        "name": dataset.name,
        "sha256": dataset.sha256,
        "rows": dataset.rows,
        "test_rows": dataset.test_rows,
        "source": dataset.source,
        "split": dataset.split,
        "test_sha256": dataset.test_sha256(),
    }
    card["training"] = {
        **run.settings.describe(run.epochs_run),
        "split": dataset.split,
        "fit_seconds": round(run.fit_seconds, 1),
        "reproducibility": spec.tolerance,
        **({"trained_with": spec.trained_by} if spec.trained_by else {}),
        **run.notes,
    }
    card.update(provenance.card_fields())
    card["onnx"] = export.card_section(sha256, difference)
    card["plots"] = pngs
    return card
