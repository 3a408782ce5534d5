"""The Kubernetes manifests under deploy/, rendered and checked with the real tools.

No cluster runs here. Each variant (the cpu and gpu overlays, the KServe InferenceService) is
rendered with `kubectl kustomize`, validated with `kubernetes-validate --strict` against the
Kubernetes API schemas, and the sources are linted with yamllint. What a schema cannot see
(probe ports against container ports, the GPU only where it belongs, one image reference,
the thread count tied to the CPU limit, selectors that select the pods) is checked here.

The checks are in tests/helpers/manifests.py; each returns the problems it finds, so that the
tests at the end can break a rendered manifest on purpose and see the check object to it.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
from collections.abc import Callable

import pytest
import yaml

from tests.helpers.manifest_validation import assert_strictly_valid
from tests.helpers.manifests import (
    CHECKS,
    DEPLOY,
    EXPECTED_IMAGE,
    EXPECTED_OBJECTS,
    GPU_RESOURCE,
    INSTALL_KUBECTL,
    VARIANTS,
    all_containers,
    env_of,
    kubectl_path,
    kubernetes_validate,
    render,
    the,
    workload,
    yamllint,
)


@pytest.fixture(scope="module")
def kubectl() -> str:
    path = kubectl_path()
    run = subprocess.run(
        [path, "version", "--client", "-o", "json"], capture_output=True, text=True, timeout=60
    )
    if run.returncode != 0:
        pytest.fail(f"{path} version failed: {run.stderr.strip()}. {INSTALL_KUBECTL}")
    kustomize = json.loads(run.stdout).get("kustomizeVersion", "")
    major = re.match(r"v(\d+)\.", kustomize)
    if major is None or int(major.group(1)) < 5:
        pytest.fail(f"{path} has kustomize '{kustomize or 'unknown'}'. {INSTALL_KUBECTL}")
    return path


@pytest.fixture(scope="module")
def rendered(kubectl: str) -> dict[str, list[dict]]:
    return {variant: render(kubectl, folder) for variant, folder in VARIANTS.items()}


# ---------------------------------------------------------------- the tests


@pytest.mark.parametrize("variant", VARIANTS)
def test_renders_the_expected_objects(rendered, variant):
    found = {(doc["kind"], doc["metadata"]["name"]) for doc in rendered[variant]}
    assert found == EXPECTED_OBJECTS[variant]


@pytest.mark.parametrize(
    ("name", "variant"),
    [(name, variant) for name, (_, variants) in CHECKS.items() for variant in variants],
)
def test_manifest_check(rendered, name, variant):
    check, _ = CHECKS[name]
    assert check(rendered[variant], variant) == []


def test_kserve_runs_the_gpu_overlays_image(rendered):
    kserve = {c["image"] for c in all_containers(rendered["kserve"])}
    gpu = {c["image"] for c in all_containers(rendered["gpu"])}
    assert kserve == gpu == {EXPECTED_IMAGE["gpu"]}


@pytest.mark.parametrize("variant", VARIANTS)
def test_kubernetes_validate_strict(rendered, variant, tmp_path):
    assert_strictly_valid(rendered[variant], tmp_path / f"{variant}.yaml", variant == "kserve")


def test_yamllint_clean():
    run = yamllint(DEPLOY)
    assert run.returncode == 0, run.stdout + run.stderr


# ---------------------------------------------------------------- the checks can fail


def first_port_of_probe(probe: str, port: object) -> Callable[[list[dict]], None]:
    def mutate(docs):
        workload(docs).container[probe]["grpc"]["port"] = port
    return mutate


def set_env(name: str, value: str) -> Callable[[list[dict]], None]:
    def mutate(docs):
        item = env_of(workload(docs).container)[name]
        item.clear()
        item.update({"name": name, "value": value})
    return mutate


def add_ort_threads(docs):
    workload(docs).container["env"].append({"name": "ZOOSERVE_ORT_THREADS", "value": "2"})


def drop_limits_cpu(docs):
    del workload(docs).container["resources"]["limits"]["cpu"]


def thread_ref(field: str, value: str) -> Callable[[list[dict]], None]:
    def mutate(docs):
        env = env_of(workload(docs).container)["ZOOSERVE_INFERENCE_THREADS"]
        env["valueFrom"]["resourceFieldRef"][field] = value
    return mutate


def add_gpu_limit(docs):
    workload(docs).container["resources"]["limits"][GPU_RESOURCE] = 1


def drop_tolerations(docs):
    del workload(docs).pod["tolerations"]


def add_sidecar(docs):
    workload(docs).pod.setdefault("initContainers", []).append(
        {"name": "fetch", "image": "busybox:1.36"})


def set_pod(field: str, value: object) -> Callable[[list[dict]], None]:
    def mutate(docs):
        workload(docs).pod[field] = value
    return mutate


def tcp_liveness(docs):
    workload(docs).container["livenessProbe"] = {"tcpSocket": {"port": 8001}}


def writable_root(docs):
    workload(docs).container["securityContext"]["readOnlyRootFilesystem"] = False


def service_port(name: str, number: int) -> Callable[[list[dict]], None]:
    def mutate(docs):
        for port in the(docs, "Service")["spec"]["ports"]:
            if port["name"] == name:
                port["port"] = number
    return mutate


def pdb_selects(labels: dict) -> Callable[[list[dict]], None]:
    def mutate(docs):
        the(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"] = labels
    return mutate


def hpa_targets(name: str) -> Callable[[list[dict]], None]:
    def mutate(docs):
        the(docs, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]["name"] = name
    return mutate


def metrics_annotation(port: str) -> Callable[[list[dict]], None]:
    def mutate(docs):
        workload(docs).annotations["prometheus.io/port"] = port
    return mutate


def kserve_first_port_named(name: str) -> Callable[[list[dict]], None]:
    def mutate(docs):
        workload(docs).container["ports"][0]["name"] = name
    return mutate


BREAKAGES = [
    ("cpu", "probes", first_port_of_probe("readinessProbe", 8002), "readinessProbe asks port"),
    ("gpu", "probes", first_port_of_probe("startupProbe", 8000), "startupProbe asks port"),
    ("kserve", "probes", first_port_of_probe("livenessProbe", 8002), "livenessProbe asks port"),
    ("cpu", "probes", tcp_liveness, "livenessProbe must be a grpc probe"),
    ("cpu", "settings_env", set_env("ZOOSERVE_GRPC_PORT", "9001"), "ZOOSERVE_GRPC_PORT"),
    ("cpu", "settings_env", set_pod("enableServiceLinks", True), "enableServiceLinks"),
    ("cpu", "threads", drop_limits_cpu, "no CPU limit"),
    ("gpu", "threads", thread_ref("resource", "requests.cpu"), "not limits.cpu"),
    ("kserve", "threads", thread_ref("divisor", "1m"), "divisor"),
    ("cpu", "threads", add_ort_threads, "ZOOSERVE_ORT_THREADS is set"),
    ("cpu", "resources", add_gpu_limit, "mentions nvidia.com/gpu"),
    ("gpu", "resources", drop_tolerations, "no toleration"),
    ("kserve", "resources", set_env("ZOOSERVE_DEVICE", "auto"), "insist on cuda"),
    ("gpu", "resources", drop_limits_cpu, "limits.cpu is missing"),
    ("cpu", "single_image", add_sidecar, "image references differ"),
    ("cpu", "termination", set_pod("terminationGracePeriodSeconds", 30), "preStop 5 s"),
    ("kserve", "termination", set_env("ZOOSERVE_DRAIN_TIMEOUT", "60"), "drain 60 s"),
    ("cpu", "security", writable_root, "readOnlyRootFilesystem"),
    ("kserve", "security", set_pod("securityContext", {}), "runAsNonRoot"),
    ("cpu", "scrape_annotations", metrics_annotation("8001"), "metrics port 8002"),
    ("gpu", "service_ports", service_port("metrics", 9090), "Service port metrics is 9090"),
    ("cpu", "selectors", pdb_selects({"app": "other"}), "PodDisruptionBudget zooserve"),
    ("gpu", "selectors", hpa_targets("elsewhere"), "HorizontalPodAutoscaler targets"),
    ("kserve", "selectors", pdb_selects({"component": "transformer"}), "PodDisruptionBudget"),
    ("kserve", "inference_service", kserve_first_port_named("grpc"), "must be h2c 8001"),
]


@pytest.mark.parametrize(
    ("variant", "name", "mutate", "complaint"), BREAKAGES,
    ids=[f"{v}-{n}-{m.__qualname__.split('.')[0]}" for v, n, m, _ in BREAKAGES],
)
def test_check_sees_a_broken_manifest(rendered, variant, name, mutate, complaint):
    docs = copy.deepcopy(rendered[variant])
    mutate(docs)
    check, _ = CHECKS[name]
    problems = check(docs, variant)
    assert any(complaint in problem for problem in problems), problems


def test_kubernetes_validate_refuses_a_named_probe_port_and_an_unknown_field(rendered, tmp_path):
    docs = copy.deepcopy(rendered["cpu"])
    container = workload(docs).container
    container["readinessProbe"]["grpc"]["port"] = "grpc"  # named ports are refused
    container["securityContext"]["readOnlyRootFS"] = True  # a typo strict mode must catch
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    run = kubernetes_validate(path)
    assert run.returncode != 0
    assert "readinessProbe.grpc.port" in run.stdout
    fixed_port = copy.deepcopy(docs)
    workload(fixed_port).container["readinessProbe"]["grpc"]["port"] = 8001
    path.write_text(yaml.safe_dump_all(fixed_port, sort_keys=False))
    run = kubernetes_validate(path)
    assert run.returncode != 0 and "readOnlyRootFS" in run.stdout, run.stdout


def test_yamllint_uses_the_deploy_config(tmp_path):
    long_line = tmp_path / "long.yaml"
    long_line.write_text("---\nkey: " + "x" * 95 + "\n")  # 100 characters: allowed
    assert yamllint(long_line).returncode == 0
    long_line.write_text("---\nkey: " + "x" * 96 + "\n")
    run = yamllint(long_line)
    assert run.returncode != 0 and "line-length" in run.stdout, run.stdout


def test_missing_kubectl_fails_with_install_advice(monkeypatch, tmp_path):
    monkeypatch.delenv("KUBECTL", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(pytest.fail.Exception, match="install kubectl"):
        kubectl_path()
