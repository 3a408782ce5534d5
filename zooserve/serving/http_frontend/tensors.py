"""JSON to core objects and back, for the HTTP surfaces: the KServe v2 REST paths (served by
`zooserve serve` and mounted in the Bento) and the Bento's own `predict` API.

Two request shapes reach the core through here:

- the `predict` API's friendly one: `{"features": [[39.1, 18.7, 181, 3750]]}` (input name to a
  nested list; shape from the nesting, datatype from the model's signature), a bare nested list
  for a one-input model, or a list of KServe v2 tensor objects;
- the KServe v2 REST one: `{"inputs": [{"name", "datatype", "shape", "data"}]}`.

Element decoding is `zooserve.protocol.codecs`, shared with gRPC, so a mistake reads the same
on both."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from zooserve.protocol import codecs
from zooserve.protocol.errors import invalid_argument, quoted
from zooserve.protocol.labels import labelled_output
from zooserve.protocol.limits import MAX_ID_LENGTH, MAX_RANK
from zooserve.serving.dataplane import InferenceRequest, InferenceResponse
from zooserve.serving.loaded_model import LoadedModel, TensorSpec

# requests


def _is_tensor_list(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(t, dict) for t in value)


def decode_tensor(model: LoadedModel, tensor: object) -> tuple[str, np.ndarray]:
    """One KServe v2 tensor object `{"name", "datatype", "shape", "data"}` to (name, array),
    its name and declared datatype checked against the model's signature first."""
    if not isinstance(tensor, Mapping):
        raise invalid_argument(
            'each input must be an object {"name", "datatype", "shape", "data"}, '
            f"got {type(tensor).__name__}"
        )
    name = tensor.get("name")
    if not isinstance(name, str) or not name:
        raise invalid_argument('an input has no "name" (a string)')
    who = f"input {quoted(name)}"
    missing = [key for key in ("datatype", "shape", "data") if key not in tensor]
    if missing:
        raise invalid_argument(f"{who} has no " + ", ".join(f'"{k}"' for k in missing))
    datatype, shape, data = tensor["datatype"], tensor["shape"], tensor["data"]
    if not isinstance(datatype, str):
        raise invalid_argument(f'{who}: "datatype" must be a string, e.g. "FP32"')
    if isinstance(shape, codecs.ElementSource):  # over 1 KiB of JSON: far past MAX_RANK
        raise invalid_argument(
            f'{who}: "shape" must be a list of integers, at most {MAX_RANK} of them')
    if not isinstance(shape, list) or not all(type(d) is int for d in shape):
        raise invalid_argument(f'{who}: "shape" must be a list of integers')
    check_parameters(tensor, who)
    spec = model.input_spec(name)
    model.check_datatype(spec, datatype)
    if not isinstance(data, (list, codecs.ElementSource)):
        data = [data]
    return name, codecs.decode_list(name, spec.datatype, shape, data)


def decode_inputs(model: LoadedModel, inputs: object) -> dict[str, np.ndarray]:
    """The predict API's `inputs` to the arrays the core validates against the signature:
    names from the signature, shapes from the nesting, datatypes from the signature."""
    if _is_tensor_list(inputs):
        return _unique(decode_tensor(model, t) for t in inputs)
    if isinstance(inputs, Mapping):
        arrays = {}
        for name, values in inputs.items():
            spec = model.input_spec(str(name))
            arrays[spec.name] = codecs.decode_nested(spec.name, spec.datatype, values)
        return arrays
    if isinstance(inputs, list):
        if len(model.inputs) != 1:
            names = ", ".join(s.name for s in model.inputs)
            raise invalid_argument(
                f"model '{model.name}' has {len(model.inputs)} inputs ({names}); "
                'send "inputs" as {"<input name>": nested list, ...}'
            )
        spec = model.inputs[0]
        return {spec.name: codecs.decode_nested(spec.name, spec.datatype, inputs)}
    raise invalid_argument(
        '"inputs" must be {"<input name>": nested list}, a nested list (one-input models) '
        "or a list of KServe v2 tensors"
    )


def request_id(body: Mapping) -> str:
    """The request's `id`: text of at most MAX_ID_LENGTH characters ("" when absent)."""
    value = body.get("id")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise invalid_argument(f'"id" must be a string, got {type(value).__name__}')
    if len(value) > MAX_ID_LENGTH:
        raise invalid_argument(
            f'"id" of {len(value)} characters; at most {MAX_ID_LENGTH}'
        )
    return value


# Request parameters that steer this frontend's own encoding, not the model.
HTTP_ONLY_PARAMETERS = frozenset({"binary_data_output"})


def check_parameters(holder: Mapping, who: str) -> None:
    """`parameters`, where given, is an object whose values are strings, numbers or
    booleans (the protocol's parameter types)."""
    parameters = holder.get("parameters")
    if parameters is None:
        return
    if not isinstance(parameters, Mapping):
        raise invalid_argument(f'{who}: "parameters" must be an object')
    for key, value in parameters.items():
        if not isinstance(value, (str, int, float, bool)):
            raise invalid_argument(
                f"{who}: parameter {quoted(key)} must be a string, number or boolean, "
                f"got {_json_type(value)}"
            )


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    return "list" if isinstance(value, codecs.ElementSource) else type(value).__name__


def _unique(pairs) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    for name, array in pairs:
        if name in arrays:
            raise invalid_argument(f"input {quoted(name)} appears more than once")
        arrays[name] = array
    return arrays


def v2_inference_request(
    model: LoadedModel, body: object, received_ns: int | None = None
) -> InferenceRequest:
    """A KServe v2 REST infer body for the model it names (already looked up);
    `received_ns`: when reading the body began."""
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
    for output in outputs:
        check_parameters(output, f"output {quoted(output['name'])}")
    check_parameters(body, "the request")
    return InferenceRequest(
        model=model,
        inputs=_unique(decode_tensor(model, t) for t in tensors),
        requested_outputs=[o["name"] for o in outputs] or None,
        id=request_id(body),
        received_ns=time.perf_counter_ns() if received_ns is None else received_ns,
        parameters={k: v for k, v in (body.get("parameters") or {}).items()
                    if k not in HTTP_ONLY_PARAMETERS},
    )


# responses


def encode_tensor(name: str, array: np.ndarray, datatype: str, nested: bool) -> dict[str, Any]:
    return {
        "name": name,
        "datatype": datatype,
        "shape": list(array.shape),
        "data": codecs.encode_json(array, nested),
    }


def _encode_outputs(response: InferenceResponse, nested: bool) -> list[dict[str, Any]]:
    return [
        encode_tensor(name, array, response.datatypes[name], nested)
        for name, array in response.outputs.items()
    ]


def predict_response(response: InferenceResponse) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model_name": response.model_name,
        "model_version": str(response.model_version),
        "outputs": _encode_outputs(response, nested=True),
    }
    found = labelled_output(response.labels, response.outputs) if response.labels else None
    if found is not None:
        body["predictions"] = [dataclasses.asdict(row) for row in found[1]]
    return body


def v2_infer_response(response: InferenceResponse) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model_name": response.model_name,
        "model_version": str(response.model_version),
        "outputs": _encode_outputs(response, nested=False),
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
        "platform": model.platform,
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
