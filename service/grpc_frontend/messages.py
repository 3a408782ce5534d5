"""Protocol messages to core objects and back: tensors, metadata, model config, statistics."""

from __future__ import annotations

import time

import numpy as np
from google.protobuf import json_format
from google.protobuf.message import DecodeError

from service import codecs
from service.dataplane import InferenceRequest, InferenceResponse
from service.errors import invalid_argument, quoted
from service.grpc_frontend import tensors
from service.grpc_frontend.generated import grpc_service_pb2 as pb
from service.grpc_frontend.generated import model_config_pb2 as config_pb
from service.limits import MAX_ID_LENGTH
from service.model_config import model_config as model_configuration
from service.repository import IndexEntry
from service.runtime import LoadedModel, TensorSpec
from service.statistics import Duration, StatisticsSnapshot


def inference_request(
    message: pb.ModelInferRequest,
    model: LoadedModel,
    received_ns: int | None = None,
    deadline: float | None = None,
) -> InferenceRequest:
    """A ModelInfer request for the model it names (already looked up); `received_ns`:
    when decoding began, `deadline`: the client's, as time.monotonic()."""
    inputs: dict[str, np.ndarray] = {}
    raw = message.raw_input_contents
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
        inputs[tensor.name] = tensors.decode_input(model, tensor, raw[position] if raw else None)
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


def parse_infer_request(data: bytes) -> pb.ModelInferRequest:
    """A ModelInferRequest from its bytes; bytes that are not one are the client's mistake."""
    try:
        return pb.ModelInferRequest.FromString(data)
    except DecodeError as exc:
        raise invalid_argument(f"the request is not a ModelInferRequest: {exc}") from None


def payload_bytes(message: pb.ModelInferRequest) -> int:
    """About how many bytes of tensor data a request carries: its raw buffers and its typed
    elements (counted at 4 bytes each). Counted in microseconds, where ByteSize() walks a
    large message and costs up to a tenth of a second on the event loop."""
    size = sum(len(raw) for raw in message.raw_input_contents)
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
    """Triton's ModelConfig: `service.model_config`'s plain data, read into the message."""
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
