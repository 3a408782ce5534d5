"""The unchanged server image serving models that are not in it, as the deploy variants that
take models from a registry run it (deploy/k8s/components/models-pull, verify-models,
model-images), on a real Docker engine and a real registry (tests/helpers/registry.py).

What is checked: the CPU server image itself goes through the registry (`docker login`, a
wrong password refused, `docker push`, removed, `docker pull` back to the same image ID) and
serves; run as the init container, the image pulls signed models with `zooserve pull` into
an empty folder with the registry's credentials from a docker config, its CA and the
verification keys, refuses an unsigned one without writing anything, and the server serves
the pulled folder read-only as the repository serves the originals; models of model-only
images mounted at /models/<name> serve. The pods' mounts are bind mounts here: Docker 20.10
has no emptyDir, Secret or image volume."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from tests.helpers.cli import zooserve
from tests.helpers.images import (
    build_model_image,
    copy_remote,
    docker,
    docker_login,
    image_size,
    require_engine,
    skip_without_containers,
)
from tests.helpers.paths import MODELS
from tests.helpers.penguin_rows import LABELS, one_of_each
from tests.helpers.registry_share import answers, push
from tests.helpers.server_image import (
    USER,
    build_server_image,
    infer,
    local_run,
    run_container,
    stand_in_base,
)
from tests.helpers.signing_keys import make_key_pair

pytestmark = [pytest.mark.slow, skip_without_containers]

# Where the manifests mount what the pull needs (deploy/k8s/components/models-pull,
# registry-ca and verify-models).
DOCKER_CONFIG = "/etc/zooserve/registry"
REGISTRY_CA = "/etc/zooserve/registry-ca"
VERIFY_KEYS = "/etc/zooserve/verify-keys"
SIGNED = ("penguins", "spectra_search", "spectra_embedding")


@pytest.fixture(scope="module")
def zoo_image() -> str:
    require_engine()
    return build_server_image(stand_in_base(), "zooserve-test:cpu")


def mounted_folder(folder, files: dict[str, bytes]):
    """A folder as the kubelet mounts a Secret or ConfigMap: readable by the pod's user."""
    folder.mkdir(parents=True)
    folder.chmod(0o755)
    for name, data in files.items():
        (folder / name).write_bytes(data)
        (folder / name).chmod(0o644)
    return folder


def run_pull(image: str, models, secrets: dict[str, object], *references: str):
    """The models-pull init container: the server image's `zooserve pull` as user 10001 on a
    read-only root, the models folder writable, every other mount read-only."""
    volumes = ["-v", f"{models}:/models"]
    for target, source in secrets.items():
        volumes += ["-v", f"{source}:{target}:ro"]
    return docker(
        "run", "--rm", "--network", "host", "--read-only", "--tmpfs", "/tmp", "--user", USER,
        "--cap-drop", "ALL", "--security-opt", "no-new-privileges", *volumes,
        "-e", f"DOCKER_CONFIG={DOCKER_CONFIG}", "-e", f"ZOOSERVE_VERIFY_KEY={VERIFY_KEYS}",
        "--entrypoint", "zooserve", image,
        "pull", "--models=/models", *references, f"--tls-ca={REGISTRY_CA}/ca.crt",
        check=False, timeout=300,
    )


def test_the_init_container_pulls_signed_models_that_the_server_then_serves(
        zoo_image, registry, server, tmp_path):
    alice = make_key_pair(tmp_path / "alice", "alice")
    shared = tmp_path / "shared"
    for name in SIGNED:
        shutil.copytree(MODELS / name / "1", shared / name / "1")
        signed = zooserve("sign", name, "--key", str(alice.private), "--models", str(shared))
        assert signed.returncode == 0, signed.stderr
    for name in ("penguins", "spectra_search"):
        pushed = push(registry, name, f"signed/{name}:1", "--models", str(shared))
        assert pushed.returncode == 0, pushed.stderr
    unsigned = push(registry, "weather", "unsigned/weather:1", "--models", str(MODELS))
    assert unsigned.returncode == 0, unsigned.stderr

    models = tmp_path / "emptydir"  # an emptyDir is writable by the pod's user
    models.mkdir()
    models.chmod(0o777)
    config = registry.docker_config() / "config.json"
    secrets = {
        DOCKER_CONFIG: mounted_folder(tmp_path / "secret", {"config.json": config.read_bytes()}),
        REGISTRY_CA: mounted_folder(tmp_path / "ca", {"ca.crt": registry.pki.ca.read_bytes()}),
        VERIFY_KEYS: mounted_folder(tmp_path / "keys", {"alice.pem": alice.public.read_bytes()}),
    }

    refused = run_pull(zoo_image, models, secrets, f"{registry.host}/unsigned/weather:1")
    assert refused.returncode != 0
    assert refused.stderr.strip().count("\n") == 0, refused.stderr
    assert "zooserve pull: error:" in refused.stderr and "unsigned" in refused.stderr
    assert list(models.iterdir()) == []

    started = time.monotonic()
    pulled = run_pull(zoo_image, models, secrets, f"{registry.host}/signed/penguins:1",
                      f"{registry.host}/signed/spectra_search:1")
    print(f"init container pull: {time.monotonic() - started:.1f} s\n{pulled.stdout}")
    assert pulled.returncode == 0, pulled.stderr
    assert sorted(p.name for p in models.iterdir()) == sorted(SIGNED)

    original = grpcclient.InferenceServerClient(server.url)
    with run_container(zoo_image, "-v", f"{models}:/models:ro",
                       "-v", f"{secrets[VERIFY_KEYS]}:{VERIFY_KEYS}:ro",
                       "-e", f"ZOOSERVE_VERIFY_KEY={VERIFY_KEYS}") as container:
        client = grpcclient.InferenceServerClient(container.url)
        index = {(m.name, m.version, m.state) for m in client.get_model_repository_index().models}
        assert index == {(name, "1", "READY") for name in SIGNED}, container.logs()
        for name in SIGNED:
            assert answers(client, name) == answers(original, name), name
        client.close()
    original.close()


def test_the_image_goes_through_a_registry_and_comes_back_serving(zoo_image, registry,
                                                                   tmp_path):
    """`docker push` to a real registry (htpasswd and TLS, tests/helpers/registry.py) after
    `docker login`, every local name of the image removed so its ID is gone, `docker pull`
    back: the same image ID, and it serves. The test's tag is put back at the end, so the
    other tests find the image whatever the order. A wrong password is refused at login."""
    config = tmp_path / "docker-config"
    refused = docker_login(registry, tmp_path / "wrong-config", password="not-the-password")
    assert refused.returncode != 0 and "unauthorized" in refused.stderr.lower(), refused.stderr
    login = docker_login(registry, config)
    assert login.returncode == 0, login.stderr

    image_id = docker("image", "inspect", "--format", "{{.Id}}", zoo_image).stdout.strip()
    remote = f"{registry.host}/zoo/zooserve:cpu"
    docker("tag", zoo_image, remote)
    started = time.monotonic()
    docker("--config", str(config), "push", remote)
    pushed_in = time.monotonic() - started
    # Tags a failed run of this test may have left on the image would keep its ID alive.
    tags = json.loads(docker("image", "inspect", "--format", "{{json .RepoTags}}",
                             image_id).stdout)
    left_over = [tag for tag in tags if tag.endswith("/zoo/zooserve:cpu") and tag != remote]
    try:
        docker("rmi", remote, zoo_image, *left_over)
        gone = docker("image", "inspect", image_id, check=False)
        assert gone.returncode != 0, f"image {image_id} is still here after rmi"
        started = time.monotonic()
        pulled = docker("--config", str(config), "pull", remote).stdout
        pulled_in = time.monotonic() - started
        assert docker("image", "inspect", "--format", "{{.Id}}",
                      remote).stdout.strip() == image_id
    finally:
        docker("tag", remote, zoo_image, check=False)
    # `docker pull` fetches no layer the engine still holds for another image (the base,
    # the packages): skopeo fetches every blob from the registry and checks its digest.
    layers = json.loads(docker("image", "inspect", "--format", "{{json .RootFS.Layers}}",
                               remote).stdout)
    started = time.monotonic()
    _, manifest = copy_remote(registry, remote, tmp_path)
    copied_in = time.monotonic() - started
    assert len(manifest["layers"]) == len(layers)
    compressed = sum(layer["size"] for layer in manifest["layers"])
    print(f"{zoo_image} ({image_id[:19]}, {image_size(remote) / 1e6:.0f} MB, "
          f"{compressed / 1e6:.0f} MB compressed) on loopback: docker push {pushed_in:.1f} s, "
          f"docker pull {pulled_in:.1f} s ({pulled.count('Pull complete')} of {len(layers)} "
          f"layers fetched), every blob by skopeo {copied_in:.1f} s")

    features, species = one_of_each()
    with run_container(remote) as container:
        client = grpcclient.InferenceServerClient(container.url)
        served = infer(client, "penguins", {"features": features})
        client.close()
    expected = local_run("penguins", {"features": features})
    np.testing.assert_allclose(served["probabilities"], expected["probabilities"], rtol=1e-5)
    assert [LABELS[i] for i in served["probabilities"].argmax(axis=1)] == species
    docker("rmi", remote, check=False)


def test_models_mounted_from_model_only_images_are_what_the_image_serves(zoo_image, tmp_path):
    """As deploy/k8s/components/model-images runs it: the unchanged server image, an empty
    /models, and each model's folder of a model-only image mounted read-only at
    /models/<name>, two of them from the library's image. Docker 20.10 has no image mounts
    (`--mount type=image` came with Docker 28, on the containerd image store), so the folders
    are copied out of the images with docker cp and bind-mounted."""
    images = [build_model_image("zooserve-test-mounted-penguins:1", "penguins"),
              build_model_image("zooserve-test-mounted-library:1", "spectra_search",
                                "spectra_embedding")]
    mounts = []
    try:
        for number, image in enumerate(images):
            created = docker("create", image, "/none").stdout.strip()
            docker("cp", f"{created}:/models", str(tmp_path / str(number)))
            docker("rm", created)
            for model in sorted((tmp_path / str(number)).iterdir()):
                mounts += ["-v", f"{model}:/models/{model.name}:ro"]
    finally:
        docker("rmi", *images, check=False)
    features, _ = one_of_each()
    with run_container(zoo_image, "--tmpfs", "/models", *mounts) as container:
        client = grpcclient.InferenceServerClient(container.url)
        index = {(m.name, m.version, m.state) for m in client.get_model_repository_index().models}
        served = infer(client, "penguins", {"features": features})
        client.close()
    assert index == {(name, "1", "READY")
                     for name in ("penguins", "spectra_search", "spectra_embedding")}
    expected = local_run("penguins", {"features": features})
    np.testing.assert_allclose(served["probabilities"], expected["probabilities"], rtol=1e-5)
