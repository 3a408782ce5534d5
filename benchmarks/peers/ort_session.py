"""The ONNX Runtime session every peer and the bare floor run: one intra-op thread, one
inter-op thread, no spinning, CPU only, so the systems differ in their serving and not in
their ONNX Runtime settings. Imports nothing but onnxruntime: the peers load it from their
own venvs (this folder is on their path), the floor as `benchmarks.peers.ort_session`."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort


def one_thread_session(path: Path | str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
