"""What the registry tests share: `zooserve push`/`pull` against a test registry, and the
answers of every served model to the same requests (to compare a pulled repository's with
the original's byte for byte)."""

from __future__ import annotations

import numpy as np
import tritonclient.grpc as grpcclient

from tests.helpers.cli import zooserve
from tests.helpers.registry import RunningRegistry
from tests.helpers.search_tensors import padded, tensors
from zooserve.spectra.simulator import simulate_library

DATATYPES = {"FP32": np.float32, "INT32": np.int32, "INT64": np.int64}


def registry_flags(registry: RunningRegistry) -> list[str]:
    return ["--tls-ca", str(registry.pki.ca)] if registry.tls else ["--plain-http"]


def registry_env(registry: RunningRegistry, password: str | None = None) -> dict[str, str]:
    """DOCKER_CONFIG pointing at a config.json with the registry's credentials (or with a
    wrong password), as `docker login` leaves it."""
    if not registry.tls:
        return {"DOCKER_CONFIG": str(registry.tmp / "no-docker-config")}
    config = registry.docker_config(password=password) if password else registry.docker_config()
    return {"DOCKER_CONFIG": str(config)}


def push(registry: RunningRegistry, model: str, reference: str, *extra: str,
         env: dict | None = None):
    return zooserve("push", model, f"{registry.host}/{reference}", *registry_flags(registry),
                    *extra, env=env or registry_env(registry))


def pull(registry: RunningRegistry, *references: str, extra: tuple[str, ...] = (),
         env: dict | None = None):
    return zooserve("pull", *(f"{registry.host}/{r}" for r in references),
                    *registry_flags(registry), *extra, env=env or registry_env(registry))


def answers(client: grpcclient.InferenceServerClient, model: str) -> list[bytes]:
    """The raw output bytes of `model` for fixed requests made from its metadata: random
    inputs of batch 3 for a model, simulated spectra for a library."""
    metadata = client.get_model_metadata(model)
    names = {tensor.name for tensor in metadata.inputs}
    if {"mz", "intensity", "n_peaks"} <= names:
        spectra = list(simulate_library(3, seed=5))
        inputs = tensors(padded(spectra))
    else:
        rng = np.random.default_rng(7)
        inputs = []
        for tensor in metadata.inputs:
            shape = [3 if size < 0 else size for size in tensor.shape]
            array = rng.random(shape).astype(DATATYPES[tensor.datatype])
            made = grpcclient.InferInput(tensor.name, shape, tensor.datatype)
            made.set_data_from_numpy(array)
            inputs.append(made)
    result = client.infer(model, inputs)
    return list(result.get_response().raw_output_contents)
