"""Peak lists as the served search model's input tensors, for tritonclient (gRPC or HTTP)."""

from __future__ import annotations

import numpy as np
import tritonclient.grpc as grpcclient

from zooserve.spectra.binning import pad_peaks


def padded(spectra):
    return dict(zip(("mz", "intensity", "n_peaks"), pad_peaks(spectra), strict=True))


def tensors(arrays: dict[str, np.ndarray], module=grpcclient):
    made = []
    for name, array in arrays.items():
        datatype = "INT32" if array.dtype == np.int32 else "FP32"
        tensor = module.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        made.append(tensor)
    return made
