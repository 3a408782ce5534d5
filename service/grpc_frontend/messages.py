"""Protocol messages to core objects and back: tensors, metadata, model config, statistics."""

from __future__ import annotations

import json
import time

import numpy as np
from google.protobuf.message import DecodeError

from service import codecs
from service.dataplane import InferenceRequest, InferenceResponse
from service.errors import invalid_argument, quoted
from service.grpc_frontend import tensors
from service.grpc_frontend.generated import grpc_service_pb2 as pb
from service.grpc_frontend.generated import model_config_pb2 as config_pb
from service.limits import MAX_ID_LENGTH
from service.repository import IndexEntry
from service.runtime import PLATFORM, LoadedModel, TensorSpec
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
    )


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
        platform=PLATFORM,
        inputs=[_tensor_metadata(s) for s in model.inputs],
        outputs=[_tensor_metadata(s) for s in model.outputs],
    )


def _config_datatype(datatype: str) -> int:
    return config_pb.DataType.Value("TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}")


def _dims(model: LoadedModel, spec: TensorSpec) -> tuple[int, ...]:
    # Triton's convention: with batching, dims leave out the batch axis.
    return spec.shape[1:] if model.max_batch_size > 0 else spec.shape


def model_config(model: LoadedModel) -> pb.ModelConfigResponse:
    """Triton's ModelConfig. Where the model runs is in the instance group's kind (KIND_GPU
    only when the CUDA provider is really in use, read back from the session) and in the
    `execution_providers` parameter; the thread counts use the parameter names of Triton's
    ONNX Runtime backend. ModelMetadata has no field for any of it, in Triton's protocol
    as in ours."""
    on_gpu = model.device == "GPU"
    parameters = {
        "execution_providers": ",".join(model.providers),
        "intra_op_thread_count": str(model.intra_op_threads),
        "inter_op_thread_count": str(model.inter_op_threads),
        "task": model.task,
        "max_queue_size": str(model.max_queue_size),
        "execution": "inline" if model.runs_inline(1) else "thread",
        "description": str(model.card.get("description", "")),
    }
    if model.labels:
        parameters["labels"] = json.dumps(model.labels)
    config = config_pb.ModelConfig(
        name=model.name,
        platform=PLATFORM,
        backend="onnxruntime",
        version_policy=config_pb.ModelVersionPolicy(all=config_pb.ModelVersionPolicy.All()),
        max_batch_size=model.max_batch_size,
        input=[
            config_pb.ModelInput(
                name=s.name, data_type=_config_datatype(s.datatype), dims=_dims(model, s)
            )
            for s in model.inputs
        ],
        output=[
            config_pb.ModelOutput(
                name=s.name, data_type=_config_datatype(s.datatype), dims=_dims(model, s)
            )
            for s in model.outputs
        ],
        instance_group=[
            config_pb.ModelInstanceGroup(
                name=model.name,
                count=model.config.instances,
                kind=config_pb.ModelInstanceGroup.KIND_GPU
                if on_gpu
                else config_pb.ModelInstanceGroup.KIND_CPU,
                gpus=[0] if on_gpu else [],
            )
        ],
        default_model_filename=model.path.name,
        dynamic_batching=_dynamic_batching(model),
        parameters={k: config_pb.ModelParameter(string_value=v) for k, v in parameters.items()},
    )
    return pb.ModelConfigResponse(config=config)


def _dynamic_batching(model: LoadedModel) -> config_pb.ModelDynamicBatching | None:
    """Triton's dynamic_batching block, for a model the batcher batches (one whose first
    axis is free); the queue bound is its default_queue_policy."""
    if not model.max_batch_size:
        return None
    return config_pb.ModelDynamicBatching(
        preferred_batch_size=model.preferred_batch_sizes,
        max_queue_delay_microseconds=model.config.dynamic_batching.max_queue_delay_us,
        default_queue_policy=config_pb.ModelQueuePolicy(
            max_queue_size=model.max_queue_size,
        ),
    )


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
