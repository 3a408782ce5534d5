"""A small MLServer runtime: one ONNX file run by ONNX Runtime (one intra-op thread), its first
input in and its outputs out, FP32, decoded and encoded with MLServer's NumpyCodec."""

from __future__ import annotations

from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from ort_session import one_thread_session  # on PYTHONPATH: mlserver_server.py puts it there


class OnnxRuntime(MLModel):
    async def load(self) -> bool:
        self.session = one_thread_session(self.settings.parameters.uri)
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        array = NumpyCodec.decode_input(payload.inputs[0])
        results = self.session.run(self.output_names, {self.input_name: array})
        return InferenceResponse(
            model_name=self.name, id=payload.id,
            outputs=[NumpyCodec.encode_output(name, result)
                     for name, result in zip(self.output_names, results, strict=True)])
