"""The Bento's `POST /models` and `POST /predict`: JSON to calls on the DataPlane and back
(the tensors' JSON is the HTTP frontend's, zooserve.serving.http_frontend.tensors)."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from zooserve.protocol.errors import invalid_argument
from zooserve.serving.dataplane import DataPlane, InferenceRequest
from zooserve.serving.http_frontend import tensors
from zooserve.serving.http_frontend.status import error_response

PENGUIN_EXAMPLE = {"features": [[39.1, 18.7, 181.0, 3750.0]]}


def models(dataplane: DataPlane) -> dict[str, Any]:
    """Every model version: its signature, labels, execution providers and card (a version
    that is not ready: its state and why)."""
    rows = []
    for row in dataplane.index():
        if row.state == "READY":
            model = dataplane.model(row.name, str(row.version))
            versions = dataplane.versions(row.name)
            rows.append({**tensors.describe_model(model, versions), "state": row.state})
        else:
            rows.append({"name": row.name, "version": str(row.version), "state": row.state,
                         "reason": row.reason})
    return {"models": rows}


async def predict(
    dataplane: DataPlane, model: str, inputs: dict[str, Any] | list[Any], version: str,
    outputs: list[str] | None,
) -> dict[str, Any]:
    """One inference: tensors out, and labels with probabilities for a classifier; a mistake
    is the error body with its status."""
    try:
        received = time.perf_counter_ns()
        loaded = dataplane.model(model, version or None)
        arrays = tensors.decode_inputs(loaded, inputs)
        _refuse_non_finite_json_numbers(inputs, arrays)
        request = InferenceRequest(model=loaded, inputs=arrays,
                                   requested_outputs=outputs or None, received_ns=received)
        return await dataplane.infer(request, tensors.predict_response)
    except Exception as exc:
        return error_response(exc, f"predict {model}")  # type: ignore[return-value]


def _refuse_non_finite_json_numbers(inputs: object, arrays: dict) -> None:
    """BentoML's JSON parser reads the literals NaN and Infinity, and numbers beyond a
    double's range (1e400) as infinite, none of which is JSON; run, they came back as 200 with
    `null`s. Refuse them, naming the input; the strings "NaN", "Infinity" and "-Infinity" are
    how a non-finite value is sent on purpose. Only arrays that hold a non-finite value are
    looked at again, so a normal request pays one isfinite per input."""
    for name, array in arrays.items():
        if array.dtype.kind != "f" or np.isfinite(array).all():
            continue
        if _holds_non_finite_number(_values_of(inputs, name)):
            raise invalid_argument(
                f"inputs: '{name}' holds a number that is not finite (NaN, Infinity, or beyond "
                'the range of a double), which JSON cannot carry; send "NaN", "Infinity" or '
                '"-Infinity" as strings if that value is meant'
            )


def _values_of(inputs: object, name: str) -> object:
    if isinstance(inputs, dict):
        return inputs.get(name, inputs)
    if isinstance(inputs, list) and inputs and all(isinstance(t, dict) for t in inputs):
        return [t.get("data") for t in inputs if t.get("name") == name]
    return inputs


def _holds_non_finite_number(values: object) -> bool:
    if isinstance(values, float):
        return not math.isfinite(values)
    if isinstance(values, list | tuple):
        return any(_holds_non_finite_number(v) for v in values)
    return False
