"""Large ModelInfer requests have their tensor data cut out of their bytes before protobuf
parses the rest (zooserve/serving/grpc_frontend/messages.py, `Cut`): the cut request must read as
the whole one does, mistakes must be answered as they are without the cut, and bytes laid out
otherwise must fall back to protobuf's own parse."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from zooserve.protocol import grpc_tensors as tensors
from zooserve.protocol.generated import grpc_service_pb2 as pb
from zooserve.serving.grpc_frontend import messages

ROWS = 200  # spectrum pairs of 200 values: 160 KB per input, above CUT_FROM_BYTES


def _request(raw: bool, rows: int = ROWS, fp64: bool = False) -> tuple[bytes, np.ndarray]:
    rng = np.random.default_rng(3)
    message = pb.ModelInferRequest(model_name="spectra_similarity", id="cut")
    arrays = []
    for name in ("spectrum_a", "spectrum_b"):
        array = rng.random((rows, 200), dtype=np.float32)
        arrays.append(array)
        tensor = message.inputs.add(name=name, datatype="FP32", shape=[rows, 200])
        tensor.parameters["note"].string_param = "kept"
        if raw:
            message.raw_input_contents.append(array.tobytes())
        elif fp64:
            tensor.contents.fp64_contents.extend(array.astype(np.float64).ravel().tolist())
        else:
            tensor.contents.fp32_contents.extend(array.ravel().tolist())
    message.outputs.add(name="similarity")
    return message.SerializeToString(), np.stack(arrays)


@pytest.mark.parametrize("raw", [False, True], ids=["typed", "raw"])
def test_the_cut_request_reads_as_the_whole_one(raw):
    data, arrays = _request(raw)
    assert len(data) >= messages.CUT_FROM_BYTES
    skeleton, cut = messages.parse_infer_request(data)
    whole = pb.ModelInferRequest.FromString(data)
    assert cut is not None and len(skeleton.SerializeToString()) < 1024
    assert (skeleton.model_name, skeleton.id) == (whole.model_name, whole.id)
    assert [o.name for o in skeleton.outputs] == ["similarity"]
    assert messages.payload_bytes(skeleton, cut) == messages.payload_bytes(whole)
    for position, tensor in enumerate(skeleton.inputs):
        assert tensor.name == whole.inputs[position].name
        assert tensor.parameters["note"].string_param == "kept"
        if raw:
            got = np.frombuffer(cut.raw[position], dtype="<f4")
        else:
            assert tensor.HasField("contents")  # emptied, still there
            got = tensors.typed_contents(tensor, "input", cut.contents[position])
        np.testing.assert_array_equal(got.reshape(ROWS, 200), arrays[position])


def test_small_and_malformed_requests_are_parsed_whole():
    small, _ = _request(raw=False, rows=2)
    assert messages.parse_infer_request(small)[1] is None
    data, _ = _request(raw=True)
    with pytest.raises(Exception) as caught:  # truncated: protobuf's parse says what is wrong
        messages.parse_infer_request(data[:-7])
    assert "not a ModelInferRequest" in str(caught.value)


def _infer(server, data: bytes):
    options = [("grpc.max_send_message_length", 64 * 2**20)]
    with grpc.insecure_channel(server.url, options=options) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                                   response_deserializer=pb.ModelInferResponse.FromString)
        return call(data, timeout=30)


def test_the_server_answers_cut_requests_as_whole_ones(server):
    typed, arrays = _request(raw=False)
    raw, _ = _request(raw=True)
    answers = [_infer(server, data) for data in (typed, raw)]
    similarities = [np.frombuffer(a.raw_output_contents[0], dtype="<f4") for a in answers]
    assert similarities[0].shape == (ROWS,) and answers[0].id == "cut"
    np.testing.assert_array_equal(similarities[0], similarities[1])


def test_a_list_of_the_wrong_type_is_named_as_before(server):
    large, _ = _request(raw=False, fp64=True)
    small, _ = _request(raw=False, rows=2, fp64=True)
    details = []
    for data in (large, small):
        with pytest.raises(grpc.RpcError) as caught:
            _infer(server, data)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        details.append(caught.value.details().replace(str(ROWS * 200), "N").replace("400", "N"))
    assert details[0] == details[1] and "contents.fp64_contents holds" in details[0]
