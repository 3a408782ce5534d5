"""Model-only images (`zooserve image build --model-only`), built by a real Docker engine,
pushed to a real registry (tests/helpers/registry.py) and read back with skopeo.

What is checked, for penguins and for the spectra_search library with its embedding model:
the image is a few MB, one layer `FROM scratch` holding exactly the version folders' files
(no shell, no OS), labelled exactly as the pushed artifact is annotated; `docker push` to the
registry after `docker login`, and skopeo reads the same labels back from it and copies the
layer out byte for byte; a real `zooserve serve` on the files that came back answers exactly
as the server on the repository does."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from tests.helpers.images import (
    build_model_image,
    docker,
    docker_login,
    image_labels,
    image_size,
    inspect_remote,
    require_engine,
    saved_layers,
    skip_without_containers,
    unpack_remote,
)
from tests.helpers.paths import MODELS
from tests.helpers.penguin_rows import one_of_each
from tests.helpers.registry_share import pull
from tests.helpers.search_tensors import padded, tensors
from tests.helpers.server import run_server
from zooserve.registry.annotations import version_annotations, version_files
from zooserve.repository.layout import sha256_of_file
from zooserve.spectra.simulator import noisy_copy, simulate_library

pytestmark = [pytest.mark.slow, skip_without_containers]

LIBRARY = "spectra_search"
EMBEDDING = "spectra_embedding"
# What each test image carries: (name, version) pairs, the first one's labels on the image.
CARRIED = {
    "penguins": [("penguins", 1)],
    "library": [(LIBRARY, 1), (EMBEDDING, 1)],
}
TAGS = {"penguins": "zooserve-test-model-penguins:1",
        "library": "zooserve-test-model-spectra_search:1"}
# Beyond the files themselves, what a one-layer image may add: tar headers and folders.
OVERHEAD_BYTES = 64 * 1024


def expected_labels(kind: str) -> dict[str, str]:
    """version_annotations of the first version carried (what `zooserve push` annotates),
    plus io.zooserve.models when the image carries more than one version."""
    (name, version), *others = CARRIED[kind]
    embedding = None
    if name == LIBRARY:
        digest = sha256_of_file(MODELS / EMBEDDING / "1" / "model.onnx")
        embedding = f"{EMBEDDING}:1@sha256:{digest}"
    labels = version_annotations(MODELS / name / str(version), name, version, embedding)
    if others:
        served = {LIBRARY: "library.json"}
        labels["io.zooserve.models"] = ",".join(
            f"{n}:{v}@sha256:{sha256_of_file(MODELS / n / str(v) / served.get(n, 'model.onnx'))}"
            for n, v in CARRIED[kind])
    return labels


def repository_files(kind: str) -> dict[str, bytes]:
    """Every file the image must hold, by its path in the image, with its bytes."""
    return {f"models/{name}/{version}/{relative}": path.read_bytes()
            for name, version in CARRIED[kind]
            for relative, path in version_files(MODELS / name / str(version))}


@pytest.fixture(scope="module")
def images():
    require_engine()
    built = {"penguins": build_model_image(TAGS["penguins"], "penguins"),
             "library": build_model_image(TAGS["library"], f"{LIBRARY}:1", f"{EMBEDDING}:1")}
    yield built
    docker("rmi", "--force", *built.values(), check=False)


@pytest.fixture(scope="module")
def pushed(images, registry, tmp_path_factory):
    """Each image pushed to the registry by `docker push`, as `HOST/zoo/<kind>-model:1`."""
    config = tmp_path_factory.mktemp("docker-config")
    login = docker_login(registry, config)
    assert login.returncode == 0, login.stderr
    references = {}
    for kind, image in images.items():
        reference = f"{registry.host}/zoo/{kind}-model:1"
        docker("tag", image, reference)
        docker("--config", str(config), "push", reference)
        docker("rmi", reference)
        references[kind] = reference
    return references


@pytest.mark.parametrize("kind", CARRIED)
def test_the_image_is_the_model_files_and_their_labels(images, kind, tmp_path):
    size = image_size(images[kind])
    files = repository_files(kind)
    total = sum(len(data) for data in files.values())
    print(f"{images[kind]}: {size:,} bytes ({size / 1e6:.2f} MB) for {len(files)} files of "
          f"{total:,} bytes")
    assert total <= size <= total + OVERHEAD_BYTES

    assert image_labels(images[kind]) == expected_labels(kind)

    # One layer, FROM scratch: the version folders and nothing else.
    (layer,) = saved_layers(images[kind], tmp_path)
    held = {m.name.removeprefix("./"): m for m in layer}
    assert {name for name, m in held.items() if m.isfile()} == set(files)
    assert all(m.isdir() for name, m in held.items() if name not in files), sorted(held)
    assert all(name == "models" or name.startswith("models/") for name in held), sorted(held)
    # Readable by the server's non-root user, whatever the modes in the repository.
    assert {m.mode & 0o777 for m in held.values() if m.isfile()} == {0o644}

    config = json.loads(docker("image", "inspect", "--format", "{{json .Config}}",
                               images[kind]).stdout)
    assert not config.get("Entrypoint") and not config.get("Cmd")
    # No shell to run: an image volume is data, never a program.
    ran = docker("run", "--rm", "--network", "none", images[kind], "/bin/sh", "-c", "true",
                 check=False, timeout=60)
    assert ran.returncode != 0
    assert "no such file or directory" in ran.stderr.lower(), ran.stderr


@pytest.mark.parametrize("kind", CARRIED)
def test_the_registry_gives_back_the_labels_and_the_files_byte_for_byte(
        pushed, registry, kind, tmp_path):
    remote = inspect_remote(registry, pushed[kind], tmp_path)
    assert remote["Labels"] == expected_labels(kind)
    assert len(remote["Layers"]) == 1

    rootfs = unpack_remote(registry, pushed[kind], tmp_path)
    came_back = {path.relative_to(rootfs).as_posix(): path.read_bytes()
                 for path in rootfs.rglob("*") if path.is_file()}
    assert came_back.keys() == repository_files(kind).keys()
    for name, data in repository_files(kind).items():
        assert came_back[name] == data, f"{name} differs after the registry"


def test_the_files_from_the_registry_serve_penguins_as_the_repository_does(
        pushed, registry, triton, tmp_path):
    rootfs = unpack_remote(registry, pushed["penguins"], tmp_path)
    features, _ = one_of_each()
    with run_server(rootfs / "models", tmp_path) as served:
        client = grpcclient.InferenceServerClient(served.url)
        index = [(m.name, m.version) for m in client.get_model_repository_index().models]
        assert index == [("penguins", "1")]
        pulled = client.infer("penguins", tensors({"features": features}))
        client.close()
    original = triton.infer("penguins", tensors({"features": features}))
    assert (pulled.get_response().raw_output_contents
            == original.get_response().raw_output_contents)


def test_the_files_from_the_registry_serve_the_library_as_the_repository_does(
        pushed, registry, triton, tmp_path):
    rootfs = unpack_remote(registry, pushed["library"], tmp_path)
    library = list(simulate_library(4000, seed=1))
    rng = np.random.default_rng(23)
    queries = [noisy_copy(library[i], rng) for i in rng.choice(len(library), 16, replace=False)]
    with run_server(rootfs / "models", tmp_path) as served:
        client = grpcclient.InferenceServerClient(served.url)
        index = {m.name for m in client.get_model_repository_index().models}
        assert index == {LIBRARY, EMBEDDING}
        pulled = client.infer(LIBRARY, tensors(padded(queries)), parameters={"top_k": 5})
        client.close()
    original = triton.infer(LIBRARY, tensors(padded(queries)), parameters={"top_k": 5})
    for output in ("ids", "scores", "metadata"):
        np.testing.assert_array_equal(pulled.as_numpy(output), original.as_numpy(output))
    originals = np.array([q.fields["ORIGINAL"] for q in queries])
    assert np.mean(pulled.as_numpy("ids").astype(str)[:, 0] == originals) >= 0.9


def test_zooserve_pull_says_an_image_is_no_artifact(pushed, registry, tmp_path):
    """A model-only image is for the kubelet (or docker); `zooserve pull` refuses it in one
    line and writes nothing."""
    reference = pushed["penguins"].removeprefix(f"{registry.host}/")
    done = pull(registry, reference, extra=("--models", str(tmp_path / "models")))
    assert done.returncode != 0
    assert done.stderr.count("\n") == 1, done.stderr
    assert "is not a zooserve model artifact" in done.stderr
    assert not (tmp_path / "models").exists()
