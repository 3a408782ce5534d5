"""The deploy variants that serve models from a registry, rendered and checked with the real
tools as tests/test_deploy_manifests.py checks the others: an init container running
`zooserve pull` into an emptyDir (with and without a private registry CA), and model-only
images mounted as `image` volumes, on Kubernetes and in a KServe InferenceService.

Each is rendered with `kubectl kustomize`, passes every check of the variant it is made from
(cpu or kserve), its own checks (tests/helpers/model_source_manifests.py), and
`kubernetes-validate --strict`: the pull variant against Kubernetes 1.27 and 1.32 as the
others, the image-volume variants against 1.33 and 1.37 (1.27's schema has no image volume,
which a test shows). The server container is the one of the variant it is made from but for
where /models comes from."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import yaml

from tests.helpers.manifest_validation import assert_strictly_valid
from tests.helpers.manifests import (
    CHECKS,
    EXPECTED_IMAGE,
    EXPECTED_OBJECTS,
    VARIANTS,
    kubectl_path,
    kubernetes_validate,
    render,
    workload,
)
from tests.helpers.model_source_manifests import (
    IMAGE_VOLUME_VARIANTS,
    MODEL_SOURCE_VARIANTS,
    PULL_CONTAINER,
    PULL_VARIANTS,
    VERIFY_KEYS,
    check_model_images,
    check_models_pull,
    pull_arguments,
    render_pull_with_registry_ca,
    schema_versions,
)

BASE_OF = {variant: base for variant, (_, base) in MODEL_SOURCE_VARIANTS.items()}
BASE_OF["cpu-models-pull-ca"] = "cpu"
OWN_CHECKS = {"models_pull": (check_models_pull, PULL_VARIANTS),
              "model_images": (check_model_images, IMAGE_VOLUME_VARIANTS)}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, list[dict]]:
    kubectl = kubectl_path()
    docs = {variant: render(kubectl, folder)
            for variant, (folder, _) in MODEL_SOURCE_VARIANTS.items()}
    docs["cpu-models-pull-ca"] = render_pull_with_registry_ca(
        kubectl, tmp_path_factory.mktemp("registry-ca"))
    for base in set(BASE_OF.values()):
        docs[base] = render(kubectl, VARIANTS[base])
    return docs


@pytest.mark.parametrize("variant", BASE_OF)
def test_renders_the_objects_of_its_base(rendered, variant):
    found = {(doc["kind"], doc["metadata"]["name"]) for doc in rendered[variant]}
    assert found == EXPECTED_OBJECTS[BASE_OF[variant]]


@pytest.mark.parametrize(
    ("name", "variant"),
    [(name, variant) for name, (_, bases) in CHECKS.items()
     for variant, base in BASE_OF.items() if base in bases],
)
def test_passes_the_checks_of_its_base(rendered, name, variant):
    check, _ = CHECKS[name]
    assert check(rendered[variant], BASE_OF[variant]) == []


@pytest.mark.parametrize(
    ("name", "variant"),
    [(name, variant) for name, (_, variants) in OWN_CHECKS.items() for variant in variants],
)
def test_passes_its_own_checks(rendered, name, variant):
    check, _ = OWN_CHECKS[name]
    assert check(rendered[variant], variant) == []


@pytest.mark.parametrize("variant", BASE_OF)
def test_the_server_container_is_its_bases_but_for_the_models(rendered, variant):
    """The same container but for where /models comes from and the keys its versions must
    verify against."""
    def without_models(docs):
        container = copy.deepcopy(workload(docs).container)
        container["volumeMounts"] = [m for m in container["volumeMounts"]
                                     if not m["mountPath"].startswith(("/models", VERIFY_KEYS))]
        container["env"] = [e for e in container["env"] if e["name"] != "ZOOSERVE_VERIFY_KEY"]
        return container

    assert without_models(rendered[variant]) == without_models(rendered[BASE_OF[variant]])
    expected = EXPECTED_IMAGE.get(BASE_OF[variant], EXPECTED_IMAGE["gpu"])
    assert workload(rendered[variant]).container["image"] == expected


def test_the_pull_verifies_signatures_and_the_ca_component_adds_the_ca(rendered):
    def pull_of(variant):
        (pull,) = workload(rendered[variant]).pod["initContainers"]
        return pull

    verify = {"name": "ZOOSERVE_VERIFY_KEY", "value": VERIFY_KEYS}
    assert verify in pull_of("cpu-models-pull")["env"]
    assert verify in workload(rendered["cpu-models-pull"]).container["env"]
    assert pull_arguments(pull_of("cpu-models-pull")).tls_ca is None
    with_ca = pull_of("cpu-models-pull-ca")
    assert pull_arguments(with_ca).tls_ca == "/etc/zooserve/registry-ca/ca.crt"
    assert any(m["name"] == "registry-ca" for m in with_ca["volumeMounts"])


@pytest.mark.parametrize("variant", BASE_OF)
def test_kubernetes_validate_strict(rendered, variant, tmp_path):
    assert_strictly_valid(rendered[variant], tmp_path / f"{variant}.yaml",
                          BASE_OF[variant] == "kserve", schema_versions(variant))


def test_an_image_volume_is_unknown_to_the_oldest_schema(rendered, tmp_path):
    """Why the image-volume variants are validated against 1.33 and later: 1.27 has no such
    volume, and strict validation says so (so the field is really checked)."""
    path = tmp_path / "images.yaml"
    path.write_text(yaml.safe_dump_all(rendered["cpu-model-images"], sort_keys=False))
    run = kubernetes_validate(path, ("1.27.0",))
    assert run.returncode != 0
    assert "'image' was unexpected" in run.stdout, run.stdout


# ---------------------------------------------------------------- the checks can fail


def pull(docs) -> dict:
    return workload(docs).pod["initContainers"][0]


def set_pull_args(*args: str) -> Callable[[list[dict]], None]:
    def mutate(docs):
        pull(docs)["args"] = list(args)
    return mutate


def pull_image(docs):
    pull(docs)["image"] = "zooserve:gpu"


def readonly_pull_models(docs):
    next(m for m in pull(docs)["volumeMounts"] if m["mountPath"] == "/models")["readOnly"] = True


def credentials_key(docs):
    volume = next(v for v in workload(docs).pod["volumes"] if v["name"] == "registry-credentials")
    volume["secret"]["items"] = [{"key": "config.json", "path": "config.json"}]


def drop_docker_config(docs):
    pull(docs)["env"] = []


def pull_as_root(docs):
    pull(docs)["securityContext"]["runAsNonRoot"] = False


def models_from_hostpath(docs):
    volume = next(v for v in workload(docs).pod["volumes"] if v["name"] == "models")
    volume.pop("emptyDir")
    volume["hostPath"] = {"path": "/srv/models"}


def server_verifies_nothing(docs):
    container = workload(docs).container
    container["env"] = [e for e in container["env"] if e["name"] != "ZOOSERVE_VERIFY_KEY"]


def unmount_keys_from_pull(docs):
    pull(docs)["volumeMounts"] = [m for m in pull(docs)["volumeMounts"]
                                  if m["name"] != "verify-keys"]


def unmount_ca(docs):
    pull(docs)["volumeMounts"] = [m for m in pull(docs)["volumeMounts"]
                                  if m["name"] != "registry-ca"]


def image_mount(field: str, value: object, index: int = 0) -> Callable[[list[dict]], None]:
    def mutate(docs):
        mounts = [m for m in workload(docs).container["volumeMounts"]
                  if m["name"].startswith("model-")]
        mounts[index][field] = value
    return mutate


def image_reference(reference: str) -> Callable[[list[dict]], None]:
    def mutate(docs):
        volume = next(v for v in workload(docs).pod["volumes"] if "image" in v)
        volume["image"]["reference"] = reference
    return mutate


def serve_the_images_own_models(docs):
    container = workload(docs).container
    container["volumeMounts"] = [m for m in container["volumeMounts"] if m["name"] != "models"]


def add_unmounted_image(docs):
    workload(docs).pod["volumes"].append(
        {"name": "model-weather", "image": {"reference": "registry.example.org/lab/w:1",
                                            "pullPolicy": "IfNotPresent"}})


def add_init_container(docs):
    workload(docs).pod["initContainers"] = [{"name": PULL_CONTAINER, "image": "busybox:1.36"}]


REFERENCE = "registry.example.org/lab/penguins:1"
BREAKAGES = [
    ("cpu-models-pull", "models_pull", pull_image, "one image"),
    ("cpu-models-pull", "models_pull", set_pull_args("push", REFERENCE), "not zooserve pull"),
    ("cpu-models-pull", "models_pull", set_pull_args("pull", REFERENCE),
     "--models is None, not /models"),
    ("cpu-models-pull", "models_pull", set_pull_args("pull", "--models=/models", "penguins"),
     "names no registry host"),
    ("cpu-models-pull", "models_pull",
     set_pull_args("pull", "--models=/models", "--plain-http", REFERENCE), "in clear"),
    ("cpu-models-pull", "models_pull",
     set_pull_args("pull", "--models=/models", "--verify-key=/keys/a.pem", REFERENCE),
     "verification key /keys/a.pem: no ConfigMap or Secret"),
    ("cpu-models-pull", "models_pull", server_verifies_nothing, "the server verifies nothing"),
    ("cpu-models-pull", "models_pull", unmount_keys_from_pull, "no ConfigMap or Secret is "
     "mounted there in pull-models"),
    ("cpu-models-pull", "models_pull", readonly_pull_models, "cannot write the models"),
    ("cpu-models-pull", "models_pull", credentials_key, "must give its .dockerconfigjson"),
    ("cpu-models-pull", "models_pull", drop_docker_config, "no DOCKER_CONFIG"),
    ("cpu-models-pull", "models_pull", pull_as_root, "runAsNonRoot"),
    ("cpu-models-pull", "models_pull", models_from_hostpath, "must be an emptyDir"),
    ("cpu-models-pull-ca", "models_pull", unmount_ca, "--tls-ca"),
    ("cpu-model-images", "model_images", image_mount("subPath", "penguins"),
     "not models/penguins"),
    ("cpu-model-images", "model_images", image_mount("mountPath", "/srv/penguins"),
     "not /models/<name>"),
    ("kserve-model-images", "model_images", image_mount("readOnly", False), "readOnly"),
    ("cpu-model-images", "model_images",
     image_reference("registry.example.org/lab/penguins:latest"), "no tagged reference"),
    ("kserve-model-images", "model_images", image_reference("penguins-model"),
     "no tagged reference"),
    ("cpu-model-images", "model_images", serve_the_images_own_models, "must be an emptyDir"),
    ("cpu-model-images", "model_images", add_unmounted_image, "mounted nowhere"),
    ("kserve-model-images", "model_images", add_init_container, "nothing but the server"),
]


@pytest.mark.parametrize(
    ("variant", "name", "mutate", "complaint"), BREAKAGES,
    ids=[f"{v}-{getattr(m, '__qualname__', 'm').split('.')[0]}-{i}"
         for i, (v, _, m, _) in enumerate(BREAKAGES)],
)
def test_check_sees_a_broken_manifest(rendered, variant, name, mutate, complaint):
    docs = copy.deepcopy(rendered[variant])
    mutate(docs)
    check, _ = OWN_CHECKS[name]
    problems = check(docs, variant)
    assert any(complaint in problem for problem in problems), problems
