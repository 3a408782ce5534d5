"""Protocol messages to core objects and back: tensors, metadata, model config, statistics."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from google.protobuf import json_format
from google.protobuf.message import DecodeError

from zooserve.protocol import codecs
from zooserve.protocol.errors import invalid_argument, quoted
from zooserve.protocol.generated import grpc_service_pb2 as pb
from zooserve.protocol.generated import model_config_pb2 as config_pb
from zooserve.protocol.grpc_tensors import WIRE_DTYPE
from zooserve.protocol.limits import MAX_ID_LENGTH
from zooserve.serving.dataplane import InferenceRequest, InferenceResponse
from zooserve.serving.grpc_frontend import tensors
from zooserve.serving.loaded_model import LoadedModel, TensorSpec
from zooserve.serving.model_config import model_config as model_configuration
from zooserve.serving.protobuf_wire import LENGTH_DELIMITED, encode_varint, fields
from zooserve.serving.repository import IndexEntry
from zooserve.serving.statistics import Duration, StatisticsSnapshot


def inference_request(
    message: pb.ModelInferRequest,
    model: LoadedModel,
    received_ns: int | None = None,
    deadline: float | None = None,
    cut: Cut | None = None,
) -> InferenceRequest:
    """A ModelInfer request for the model it names (already looked up); `received_ns`:
    when decoding began, `deadline`: the client's, as time.monotonic(); `cut`: the tensor
    data `parse_infer_request` cut out of it, if any."""
    inputs: dict[str, np.ndarray] = {}
    raw = cut.raw if cut is not None else message.raw_input_contents
    contents = cut.contents if cut is not None else {}
    if raw and len(raw) != len(message.inputs):
        raise invalid_argument(
            f"request has {len(message.inputs)} inputs but {len(raw)} raw_input_contents; "
            "send one raw buffer per input, in the order of the inputs"
        )
    if len(message.id) > MAX_ID_LENGTH:
        raise invalid_argument(
            f"request id of {len(message.id)} characters; at most {MAX_ID_LENGTH}"
        )
    for position, tensor in enumerate(message.inputs):
        if tensor.name in inputs:
            raise invalid_argument(f"input {quoted(tensor.name)} appears more than once")
        inputs[tensor.name] = tensors.decode_input(
            model, tensor, raw[position] if raw else None, contents.get(position)
        )
    return InferenceRequest(
        model=model,
        inputs=inputs,
        requested_outputs=[o.name for o in message.outputs] or None,
        id=message.id,
        received_ns=time.perf_counter_ns() if received_ns is None else received_ns,
        deadline=deadline,
        parameters={key: _parameter(value) for key, value in message.parameters.items()},
    )


def _parameter(value: pb.InferParameter) -> object:
    choice = value.WhichOneof("parameter_choice")
    return getattr(value, choice) if choice else None


# Wire format: field numbers of ModelInferRequest (inputs, raw_input_contents), of its
# InferInputTensor (contents), and the packed typed lists read in place.
_INPUTS, _RAW_INPUT_CONTENTS, _CONTENTS = 5, 7, 5
_PACKED = {6: "fp32_contents", 7: "fp64_contents"}
# Below this a request is parsed whole: cutting pays only where copies cost.
CUT_FROM_BYTES = 64 * 1024


@dataclass
class Cut:
    """Tensor data cut out of a request's bytes before protobuf parses the rest: numpy then
    reads the elements where they lie. Parsing them would copy them (30 ms for 57 MiB), and
    reading typed contents back from the parsed message copies them again; both hold the
    GIL, and with it the event loop, for the whole copy."""

    raw: list[memoryview] = field(default_factory=list)  # raw_input_contents, in order
    # input position -> (its typed list's name, the list's packed elements)
    contents: dict[int, tuple[str, memoryview]] = field(default_factory=dict)

    def nbytes(self) -> int:
        return sum(map(len, self.raw)) + sum(len(v) for _, v in self.contents.values())


def parse_infer_request(data: bytes) -> tuple[pb.ModelInferRequest, Cut | None]:
    """A ModelInferRequest from its bytes, and for a large one its tensor data, cut out
    (see Cut); bytes that are not a ModelInferRequest are the client's mistake."""
    if len(data) >= CUT_FROM_BYTES:
        try:
            skeleton, cut = _cut(memoryview(data))
            return pb.ModelInferRequest.FromString(skeleton), cut
        except (ValueError, IndexError, DecodeError):
            pass  # not laid out as expected: protobuf parses it all, and says what is wrong
    try:
        return pb.ModelInferRequest.FromString(data), None
    except DecodeError as exc:
        raise invalid_argument(f"the request is not a ModelInferRequest: {exc}") from None


def _cut(view: memoryview) -> tuple[bytes, Cut]:
    """The request's bytes without its raw_input_contents and with each input's packed
    FP32/FP64 contents emptied, and what was taken out. An input's contents is cut only when
    it is one packed list, sent once; anything else stays for protobuf to read."""
    cut = Cut()
    kept: list[memoryview | bytes] = []
    position = 0
    for number, wire, field_start, start, end in fields(view, 0, len(view)):
        if number == _RAW_INPUT_CONTENTS and wire == LENGTH_DELIMITED:
            cut.raw.append(view[start:end])
            continue
        if number == _INPUTS and wire == LENGTH_DELIMITED:
            emptied = _cut_contents(view, start, end)
            if emptied is not None:
                tensor, cut.contents[position] = emptied
                kept += [b"\x2a", encode_varint(len(tensor)), tensor]  # field 5, length-delimited
                position += 1
                continue
            position += 1
        kept.append(view[field_start:end])
    return b"".join(kept), cut


def _cut_contents(
    view: memoryview, start: int, end: int
) -> tuple[bytes, tuple[str, memoryview]] | None:
    """One InferInputTensor with its contents emptied, and the packed list that was in it;
    None when its contents is not one packed FP32/FP64 list sent once."""
    found = None
    for number, wire, field_start, value_start, value_end in fields(view, start, end):
        if number == _CONTENTS:
            if found is not None or wire != LENGTH_DELIMITED:
                return None
            found = field_start, value_start, value_end
    if found is None:
        return None
    field_start, value_start, value_end = found
    lists = list(fields(view, value_start, value_end))
    if len(lists) != 1 or lists[0][0] not in _PACKED or lists[0][1] != LENGTH_DELIMITED:
        return None
    number, _, _, elements_start, elements_end = lists[0]
    name = _PACKED[number]
    if (elements_end - elements_start) % WIRE_DTYPE[name].itemsize:
        return None
    # An empty contents stays, so that the tensor still says it came with contents.
    tensor = b"".join([view[start:field_start], b"\x2a\x00", view[value_end:end]])
    return tensor, (name, view[elements_start:elements_end])


def payload_bytes(message: pb.ModelInferRequest, cut: Cut | None = None) -> int:
    """About how many bytes of tensor data a request carries: its raw buffers and its typed
    elements (counted at 4 bytes each), with what was cut out of it. Counted in
    microseconds, where ByteSize() walks a large message and costs up to a tenth of a second
    on the event loop."""
    size = cut.nbytes() if cut is not None else 0
    size += sum(len(raw) for raw in message.raw_input_contents)
    for tensor in message.inputs:
        if tensor.HasField("contents"):
            size += 4 * sum(len(values) for _, values in tensor.contents.ListFields())
    return size


def infer_response(response: InferenceResponse) -> pb.ModelInferResponse:
    message = pb.ModelInferResponse(
        model_name=response.model_name,
        model_version=str(response.model_version),
        id=response.id,
    )
    for name, array in response.outputs.items():
        message.outputs.add(name=name, datatype=response.datatypes[name], shape=array.shape)
        message.raw_output_contents.append(codecs.encode_raw(array))
    return message


def _tensor_metadata(spec: TensorSpec) -> pb.ModelMetadataResponse.TensorMetadata:
    return pb.ModelMetadataResponse.TensorMetadata(
        name=spec.name, datatype=spec.datatype, shape=spec.shape
    )


def model_metadata(model: LoadedModel, versions: list[int]) -> pb.ModelMetadataResponse:
    return pb.ModelMetadataResponse(
        name=model.name,
        versions=[str(v) for v in versions],
        platform=model.platform,
        inputs=[_tensor_metadata(s) for s in model.inputs],
        outputs=[_tensor_metadata(s) for s in model.outputs],
    )


def model_config(model: LoadedModel) -> pb.ModelConfigResponse:
    """Triton's ModelConfig: `zooserve.serving.model_config`'s plain data, read into the message."""
    config = json_format.ParseDict(model_configuration(model), config_pb.ModelConfig())
    return pb.ModelConfigResponse(config=config)


def _duration(d: Duration) -> pb.StatisticDuration:
    return pb.StatisticDuration(count=d.count, ns=d.ns)


def model_statistics(
    rows: list[tuple[LoadedModel, StatisticsSnapshot]],
) -> pb.ModelStatisticsResponse:
    response = pb.ModelStatisticsResponse()
    for model, s in rows:
        response.model_stats.add(
            name=model.name,
            version=str(model.version),
            last_inference=s.last_inference_ms,
            inference_count=s.inference_count,
            execution_count=s.execution_count,
            inference_stats=pb.InferStatistics(
                success=_duration(s.success),
                fail=_duration(s.fail),
                queue=_duration(s.queue),
                compute_input=_duration(s.compute_input),
                compute_infer=_duration(s.compute_infer),
                compute_output=_duration(s.compute_output),
            ),
            batch_stats=[
                pb.InferBatchStatistics(
                    batch_size=size,
                    compute_input=_duration(b.compute_input),
                    compute_infer=_duration(b.compute_infer),
                    compute_output=_duration(b.compute_output),
                )
                for size, b in s.batches.items()
            ],
        )
    return response


def repository_index(rows: list[IndexEntry], ready_only: bool) -> pb.RepositoryIndexResponse:
    return pb.RepositoryIndexResponse(
        models=[
            pb.RepositoryIndexResponse.ModelIndex(
                name=r.name, version=str(r.version), state=r.state, reason=r.reason
            )
            for r in rows
            if r.state == "READY" or not ready_only
        ]
    )
