"""JSON to core objects and back, for both HTTP surfaces of the BentoML frontend.

Two request shapes reach the core through here:

- the `predict` API's friendly one: `{"features": [[39.1, 18.7, 181, 3750]]}` (input name to a
  nested list; shape from the nesting, datatype from the model's signature), a bare nested list
  for a one-input model, or a list of KServe v2 tensor objects;
- the KServe v2 REST one: `{"inputs": [{"name", "datatype", "shape", "data"}]}`.

Element decoding is `service.codecs`, shared with gRPC, so a mistake reads the same on both."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from service import codecs
from service.dataplane import InferenceRequest, InferenceResponse
from service.datatypes import datatype_of
from service.errors import invalid_argument
from service.runtime import PLATFORM, LoadedModel, TensorSpec

# requests


def _is_tensor_list(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(t, dict) for t in value)


def decode_tensor(tensor: object) -> tuple[str, np.ndarray]:
    """One KServe v2 tensor object `{"name", "datatype", "shape", "data"}` to (name, array)."""
    if not isinstance(tensor, Mapping):
        raise invalid_argument(
            'each input must be an object {"name", "datatype", "shape", "data"}, '
            f"got {type(tensor).__name__}"
        )
    name = tensor.get("name")
    if not isinstance(name, str) or not name:
        raise invalid_argument('an input has no "name" (a string)')
    missing = [key for key in ("datatype", "shape", "data") if key not in tensor]
    if missing:
        raise invalid_argument(f"input '{name}' has no " + ", ".join(f'"{k}"' for k in missing))
    datatype, shape, data = tensor["datatype"], tensor["shape"], tensor["data"]
    if not isinstance(datatype, str):
        raise invalid_argument(f'input \'{name}\': "datatype" must be a string, e.g. "FP32"')
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) for d in shape
    ):
        raise invalid_argument(f"input '{name}': \"shape\" must be a list of integers")
    if not isinstance(data, list):
        data = [data]
    return name, codecs.decode_list(name, datatype, shape, data)


def decode_nested(name: str, spec: TensorSpec | None, values: object) -> np.ndarray:
    """A nested list to an array; its shape is the nesting, its datatype the signature's."""
    if spec is None:
        # Not an input of the model: the core's signature check names it and lists the
        # real ones, so its elements need no reading.
        return np.empty(0, dtype=np.float32)
    dtype = codecs.numpy_dtype(name, spec.datatype)
    try:
        array = np.asarray(values, dtype=dtype)
    except (ValueError, TypeError) as exc:
        raise invalid_argument(
            f"input '{name}': elements cannot be read as {spec.datatype}: {exc}"
        ) from None
    return array


def decode_inputs(model: LoadedModel, inputs: object) -> dict[str, np.ndarray]:
    """The predict API's `inputs` to the arrays the core validates against the signature."""
    specs = {s.name: s for s in model.inputs}
    if _is_tensor_list(inputs):
        return _unique(decode_tensor(t) for t in inputs)
    if isinstance(inputs, Mapping):
        return {
            str(name): decode_nested(str(name), specs.get(str(name)), values)
            for name, values in inputs.items()
        }
    if isinstance(inputs, list):
        if len(model.inputs) != 1:
            names = ", ".join(specs)
            raise invalid_argument(
                f"model '{model.name}' has {len(model.inputs)} inputs ({names}); "
                'send "inputs" as {"<input name>": nested list, ...}'
            )
        spec = model.inputs[0]
        return {spec.name: decode_nested(spec.name, spec, inputs)}
    raise invalid_argument(
        '"inputs" must be {"<input name>": nested list}, a nested list (one-input models) '
        "or a list of KServe v2 tensors"
    )


def _unique(pairs) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    for name, array in pairs:
        if name in arrays:
            raise invalid_argument(f"input '{name}' appears more than once")
        arrays[name] = array
    return arrays


def v2_inference_request(name: str, version: str | None, body: object) -> InferenceRequest:
    """A KServe v2 REST infer body to the core's request."""
    if not isinstance(body, Mapping):
        raise invalid_argument('the request body must be a JSON object with "inputs"')
    tensors = body.get("inputs")
    if not isinstance(tensors, list):
        raise invalid_argument('"inputs" must be a list of tensors')
    outputs = body.get("outputs") or []
    if not isinstance(outputs, list) or not all(
        isinstance(o, Mapping) and isinstance(o.get("name"), str) for o in outputs
    ):
        raise invalid_argument('"outputs" must be a list of {"name": "<output name>"}')
    request_id = body.get("id", "")
    return InferenceRequest(
        model_name=name,
        model_version=version or None,
        inputs=_unique(decode_tensor(t) for t in tensors),
        requested_outputs=[o["name"] for o in outputs] or None,
        id=str(request_id) if request_id is not None else "",
    )


# responses


def _elements(array: np.ndarray) -> np.ndarray:
    if array.dtype.kind in "OS":  # BYTES: JSON holds text, not bytes
        return np.vectorize(
            lambda x: x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x),
            otypes=[object],
        )(array)
    return array


def encode_tensor(name: str, array: np.ndarray, nested: bool) -> dict[str, Any]:
    data = _elements(array)
    return {
        "name": name,
        "datatype": datatype_of(array),
        "shape": list(array.shape),
        "data": data.tolist() if nested else data.reshape(-1).tolist(),
    }


def predictions(labels: Sequence[str], outputs: Mapping[str, np.ndarray]) -> list[dict] | None:
    """Per row, the most likely label and every label's probability, read from the output
    that has one value per label (`probabilities` when there is one)."""
    ordered = sorted(outputs.items(), key=lambda item: item[0] != "probabilities")
    for _, array in ordered:
        if array.ndim in (1, 2) and array.shape[-1] == len(labels):
            rows = array.reshape(-1, len(labels)).astype(float)
            return [
                {
                    "label": labels[int(np.argmax(row))],
                    "probability": float(np.max(row)),
                    "probabilities": dict(zip(labels, row.tolist(), strict=True)),
                }
                for row in rows
            ]
    return None


def predict_response(response: InferenceResponse) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model_name": response.model_name,
        "model_version": str(response.model_version),
        "outputs": [encode_tensor(n, a, nested=True) for n, a in response.outputs.items()],
    }
    if response.labels:
        found = predictions(response.labels, response.outputs)
        if found is not None:
            body["predictions"] = found
    return body


def v2_infer_response(response: InferenceResponse) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model_name": response.model_name,
        "model_version": str(response.model_version),
        "outputs": [encode_tensor(n, a, nested=False) for n, a in response.outputs.items()],
    }
    if response.id:
        body["id"] = response.id
    return body


def _spec_json(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "datatype": spec.datatype, "shape": list(spec.shape)}


def v2_model_metadata(model: LoadedModel, versions: Sequence[int]) -> dict[str, Any]:
    return {
        "name": model.name,
        "versions": [str(v) for v in versions],
        "platform": PLATFORM,
        "inputs": [_spec_json(s) for s in model.inputs],
        "outputs": [_spec_json(s) for s in model.outputs],
    }


def describe_model(model: LoadedModel, versions: Sequence[int]) -> dict[str, Any]:
    """What the `models` API lists: the signature, where it runs, and the whole card."""
    return {
        **v2_model_metadata(model, versions),
        "version": str(model.version),
        "task": model.task,
        "description": str(model.card.get("description", "")),
        "labels": model.labels,
        "max_batch_size": model.max_batch_size,
        "execution_providers": model.providers,
        "card": model.card,
    }
