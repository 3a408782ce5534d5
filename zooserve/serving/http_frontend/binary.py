"""Triton's binary tensor data extension on the KServe v2 infer path, both ways.

A request with the `Inference-Header-Content-Length: N` header is N bytes of JSON (the usual
infer body) followed by the binary tensors: each input whose `parameters.binary_data_size`
is given has that many bytes there, in the order of `inputs`, in the raw layout of gRPC's
`raw_input_contents` (little-endian, row-major; BYTES elements each a 4-byte little-endian
length and the bytes), and no `data`. Inputs without it carry JSON `data` as usual.

A response carries an output as binary when the request asks: `parameters.binary_data` on
the requested output, else the request's `parameters.binary_data_output`. Such an output has
`parameters.binary_data_size` and no `data`; its bytes follow the JSON in the order of
`outputs`, and the response's `Inference-Header-Content-Length` says where the JSON ends.

Whatever does not add up is the client's mistake (400) with a message naming the header,
the input or the parameter; nothing here can raise anything else."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from starlette.responses import JSONResponse, Response

from zooserve.protocol import codecs
from zooserve.protocol.errors import invalid_argument, quoted
from zooserve.serving.dataplane import InferenceRequest, InferenceResponse
from zooserve.serving.http_frontend import tensors
from zooserve.serving.http_frontend.body import read_json
from zooserve.serving.loaded_model import LoadedModel

HEADER = "Inference-Header-Content-Length"
_DIGITS = re.compile(r"[0-9]{1,20}")


@dataclass
class OutputChoice:
    """Which outputs go back as binary: per requested output, else the request's default."""

    default: bool = False
    per_output: dict[str, bool] = field(default_factory=dict)

    def binary(self, name: str) -> bool:
        return self.per_output.get(name, self.default)


def _who(tensor: object, position: int) -> str:
    name = tensor.get("name") if isinstance(tensor, Mapping) else None
    return f"input {quoted(name)}" if isinstance(name, str) and name else f"inputs[{position}]"


def header_length(value: str | None, body_size: int) -> int | None:
    """The JSON header's length from `Inference-Header-Content-Length` (None without it)."""
    if value is None:
        return None
    if not _DIGITS.fullmatch(value.strip()):
        raise invalid_argument(
            f"{HEADER} must be the length of the JSON header in bytes, got {value[:40]!r}"
        )
    length = int(value)
    if length > body_size:
        raise invalid_argument(
            f"{HEADER} is {length}, but the whole body has only {body_size} bytes"
        )
    return length




def _parameters(holder: Mapping, who: str) -> Mapping:
    parameters = holder.get("parameters", {})
    if parameters is None:
        return {}
    if not isinstance(parameters, Mapping):
        raise invalid_argument(f'{who}: "parameters" must be an object')
    return parameters


def _binary_size(tensor: Mapping, who: str) -> int | None:
    size = _parameters(tensor, who).get("binary_data_size")
    if size is None:
        return None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise invalid_argument(
            f"{who}: parameters.binary_data_size must be a number of bytes (an integer, 0 or "
            f"more), got {json.dumps(size)[:40]}"
        )
    if "data" in tensor:
        raise invalid_argument(
            f'{who} has both "data" and parameters.binary_data_size; send its elements one '
            "way: in data, or as binary after the JSON header"
        )
    return size


def _flag(parameters: Mapping, key: str, who: str) -> bool | None:
    value = parameters.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise invalid_argument(f"{who}: parameters.{key} must be true or false, got "
                           f"{json.dumps(value)[:40]}")


def output_choice(body: Mapping) -> OutputChoice:
    """The request's wishes for binary outputs, checked."""
    default = _flag(_parameters(body, "the request"), "binary_data_output", "the request")
    choice = OutputChoice(default=bool(default))
    outputs = body.get("outputs")
    if not isinstance(outputs, list):
        return choice  # absent, or a mistake that v2_inference_request reports
    for position, output in enumerate(outputs):
        if not isinstance(output, Mapping):
            continue
        name = output.get("name")
        who = f"output {quoted(name)}" if isinstance(name, str) else f"outputs[{position}]"
        parameters = _parameters(output, who)
        if parameters.get("classification") not in (None, 0):
            raise invalid_argument(
                f"{who}: parameters.classification (Triton's classification extension) is not "
                "supported; ask for the output itself, and the labels are in the model's "
                "config"
            )
        binary = _flag(parameters, "binary_data", who)
        if binary is not None and isinstance(name, str):
            choice.per_output[name] = binary
    return choice


def _decode_binary(model: LoadedModel, tensor: Mapping, who: str, raw: memoryview) -> np.ndarray:
    name = tensor.get("name")
    if not isinstance(name, str) or not name:
        raise invalid_argument(f'{who} has no "name" (a string)')
    datatype, shape = tensor.get("datatype"), tensor.get("shape")
    if not isinstance(datatype, str):
        raise invalid_argument(f'{who}: "datatype" must be a string, e.g. "FP32"')
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) for d in shape
    ):
        raise invalid_argument(f'{who}: "shape" must be a list of integers')
    spec = model.input_spec(name)
    model.check_datatype(spec, datatype)
    # BYTES elements become bytes objects of their own; other types are read in place.
    content = bytes(raw) if spec.datatype == "BYTES" else raw
    return codecs.decode_raw(name, spec.datatype, shape, content)


def split_body(
    body: bytes | bytearray, header_value: str | None
) -> tuple[object, memoryview | None]:
    """The JSON header, parsed, and the binary part after it (None without the header)."""
    length = header_length(header_value, len(body))
    if length is None:
        hint = f"; binary tensors after the JSON need the {HEADER} header"
        return read_json(body, "the request body", hint), None
    view = memoryview(body)
    what = f"the JSON header (the first {length} bytes, as {HEADER} says)"
    return read_json(view[:length], what), view[length:]


def inference_request(
    model: LoadedModel,
    body: bytes | bytearray,
    header_value: str | None,
    received_ns: int | None = None,
) -> tuple[InferenceRequest, OutputChoice]:
    """A KServe v2 infer body, JSON or with binary tensors, for the model it names (already
    looked up); and which outputs the client wants back as binary."""
    received_ns = time.perf_counter_ns() if received_ns is None else received_ns
    header, binary = split_body(body, header_value)
    if not isinstance(header, Mapping):
        raise invalid_argument('the request body must be a JSON object with "inputs"')
    choice = output_choice(header)
    inputs = header.get("inputs")
    if not isinstance(inputs, list):
        raise invalid_argument('"inputs" must be a list of tensors')

    sizes = [
        _binary_size(tensor, _who(tensor, i)) if isinstance(tensor, Mapping) else None
        for i, tensor in enumerate(inputs)
    ]
    wanted = sum(s for s in sizes if s is not None)
    if binary is None:
        if any(s is not None for s in sizes):
            first = next(i for i, s in enumerate(sizes) if s is not None)
            raise invalid_argument(
                f"{_who(inputs[first], first)} has parameters.binary_data_size, but the "
                f"request has no {HEADER} header saying where the JSON ends and the binary "
                "data begins"
            )
        return tensors.v2_inference_request(model, header, received_ns), choice
    if wanted != len(binary):
        raise invalid_argument(
            f"the binary data after the JSON header is {len(binary)} bytes, but the inputs' "
            f"parameters.binary_data_size add up to {wanted} bytes ({HEADER} "
            f"{len(body) - len(binary)} of a {len(body)}-byte body)"
        )

    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for position, (tensor, size) in enumerate(zip(inputs, sizes, strict=True)):
        if size is None:
            continue
        who = _who(tensor, position)
        array = _decode_binary(model, tensor, who, binary[offset : offset + size])
        offset += size
        if tensor["name"] in arrays:
            raise invalid_argument(f"input {quoted(tensor['name'])} appears more than once")
        arrays[tensor["name"]] = array

    # The inputs that carry JSON data take the usual path, with the rest of the request.
    in_json = [t for t, s in zip(inputs, sizes, strict=True) if s is None]
    request = tensors.v2_inference_request(model, {**header, "inputs": in_json}, received_ns)
    for name in arrays:
        if name in request.inputs:
            raise invalid_argument(f"input {quoted(name)} appears more than once")
    ordered = {}
    for tensor, size in zip(inputs, sizes, strict=True):
        name = tensor["name"]
        ordered[name] = arrays[name] if size is not None else request.inputs[name]
    request.inputs = ordered
    return request, choice


def infer_response(response: InferenceResponse, choice: OutputChoice) -> Response:
    """The infer answer: plain JSON unless some output goes back as binary."""
    if not any(choice.binary(name) for name in response.outputs):
        return JSONResponse(tensors.v2_infer_response(response))
    outputs: list[dict[str, Any]] = []
    buffers: list[bytes] = []
    for name, array in response.outputs.items():
        datatype = response.datatypes[name]
        if choice.binary(name):
            raw = codecs.encode_raw(array)
            buffers.append(raw)
            outputs.append({
                "name": name, "datatype": datatype, "shape": list(array.shape),
                "parameters": {"binary_data_size": len(raw)},
            })
        else:
            outputs.append(tensors.encode_tensor(name, array, datatype, nested=False))
    body: dict[str, Any] = {
        "model_name": response.model_name,
        "model_version": str(response.model_version),
        "outputs": outputs,
    }
    if response.id:
        body["id"] = response.id
    header = json.dumps(body, ensure_ascii=False, allow_nan=False,
                        separators=(",", ":")).encode("utf-8")
    return Response(
        b"".join([header, *buffers]),
        media_type="application/octet-stream",
        headers={HEADER: str(len(header))},
    )

