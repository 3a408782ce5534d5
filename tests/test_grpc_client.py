"""How `zooserve predict`'s client reads a response's outputs: with the output decoders
(a broken output is named as an output, never as an input) and against the datatypes the
model's metadata announced. zooserve's generated protobuf modules cannot share a process
with tritonclient's (both register `inference.*`), so each check runs in its own process."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.conftest import ROOT

READ_ONE_OUTPUT = """
from service.errors import ServingError
from service.grpc_frontend import tensors
from service.grpc_frontend.generated import grpc_service_pb2 as pb

response = pb.ModelInferResponse(model_name="penguins", model_version="1")
response.outputs.add(name="probabilities", datatype={datatype!r}, shape=[1, 3])
try:
    array = tensors.decode_output(response.outputs[0], {raw!r}, expected="FP32")
    print("decoded", array.dtype, list(array.shape))
except ServingError as error:
    print("refused", error.kind.name, error.message)
"""


def read_one_output(datatype: str, raw: bytes) -> str:
    script = textwrap.dedent(READ_ONE_OUTPUT.format(datatype=datatype, raw=raw))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.parametrize("datatype, raw, expected", [
    ("FP32", b"\0" * 12, "decoded float32 [1, 3]"),
    ("FP32", b"\0" * 8,
     "refused INVALID_ARGUMENT output 'probabilities': raw content has 8 bytes, but shape "
     "[1, 3] of FP32 needs 12 bytes (3 elements of 4)"),
    ("FP64", b"\0" * 24,
     "refused INVALID_ARGUMENT output 'probabilities': datatype FP64 in the response, the "
     "model's metadata says FP32"),
])  # fmt: skip
def test_outputs_are_read_as_outputs(datatype, raw, expected):
    assert read_one_output(datatype, raw) == expected
