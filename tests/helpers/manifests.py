"""Reading and checking the Kubernetes manifests under deploy/ (tests/test_deploy_manifests.py
and the secure overlay's test in tests/test_security.py).

Every check is a function that returns the problems it finds in one rendered variant, so that
the tests can break a rendered manifest on purpose and see the check object to it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.helpers.paths import DEPLOY

VARIANTS = {
    "cpu": DEPLOY / "k8s" / "overlays" / "cpu",
    "gpu": DEPLOY / "k8s" / "overlays" / "gpu",
    "kserve": DEPLOY / "kserve",
}
DEPLOYMENT_VARIANTS = ("cpu", "gpu")
GPU_VARIANTS = ("gpu", "kserve")
# The objects each variant must render to, so that no check passes on a missing object.
EXPECTED_OBJECTS = {
    "cpu": {
        ("Deployment", "zooserve"),
        ("Service", "zooserve"),
        ("HorizontalPodAutoscaler", "zooserve"),
        ("PodDisruptionBudget", "zooserve"),
    },
    "kserve": {("InferenceService", "zooserve"), ("PodDisruptionBudget", "zooserve-predictor")},
}
EXPECTED_OBJECTS["gpu"] = EXPECTED_OBJECTS["cpu"]
# The image each Deployment overlay names (the contract with the Dockerfile's targets).
EXPECTED_IMAGE = {"cpu": "zooserve:cpu", "gpu": "zooserve:gpu"}
# The oldest Kubernetes the manifests claim (native gRPC probes are GA from 1.27) and the
# kubectl on the CI machines.
SCHEMA_VERSIONS = ("1.27.0", "1.32.0")
# The server's drain after SIGTERM when ZOOSERVE_DRAIN_TIMEOUT is not set.
DEFAULT_DRAIN_S = 30
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")
GPU_RESOURCE = "nvidia.com/gpu"
GPU_NODE_LABEL = "nvidia.com/gpu.present"
# Fields of a KServe predictor that are KServe's own; the rest of it is a Pod spec.
KSERVE_EXTENSION_FIELDS = {
    "minReplicas", "maxReplicas", "scaleTarget", "scaleMetric", "containerConcurrency",
    "timeout", "canaryTrafficPercent", "logger", "batcher", "labels", "annotations",
    "deploymentStrategy",
}
KSERVE_DEPLOYMENT_MODES = {"RawDeployment", "Standard"}

INSTALL_KUBECTL = (
    "kubectl with kustomize v5 renders the manifests offline. The CI machines have it at "
    "/usr/bin/kubectl (google-cloud-sdk's kubectl 1.32). Elsewhere install kubectl 1.27 or "
    "newer (https://kubernetes.io/docs/tasks/tools/; Debian's kubernetes-client package is "
    "1.20, with a kustomize too old for these manifests), or point KUBECTL at one."
)


# ---------------------------------------------------------------- the tools


def kubectl_path() -> str:
    """The kubectl to render with: $KUBECTL, else the one on PATH; fails the test if none."""
    named = os.environ.get("KUBECTL")
    found = shutil.which(named) if named else shutil.which("kubectl")
    if found is None:
        pytest.fail(f"kubectl not found ({named or 'not on PATH'}). {INSTALL_KUBECTL}")
    return found


def render(kubectl: str, folder: Path) -> list[dict]:
    run = subprocess.run(
        [kubectl, "kustomize", str(folder)], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, f"kubectl kustomize {folder} failed:\n{run.stderr}"
    return [doc for doc in yaml.safe_load_all(run.stdout) if doc]


def kubernetes_validate(path: Path,
                        schema_versions: tuple[str, ...] = SCHEMA_VERSIONS
                        ) -> subprocess.CompletedProcess:
    versions = [arg for version in schema_versions for arg in ("-k", version)]
    return subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", *versions, str(path)],
        capture_output=True, text=True, timeout=120,
    )


def yamllint(*paths: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "yamllint", "-c", str(DEPLOY / ".yamllint"), "--strict",
         *map(str, paths)],
        capture_output=True, text=True, timeout=120,
    )


# ---------------------------------------------------------------- reading rendered objects


def objects(docs: list[dict], kind: str) -> list[dict]:
    return [doc for doc in docs if doc["kind"] == kind]


def the(docs: list[dict], kind: str) -> dict:
    found = objects(docs, kind)
    assert len(found) == 1, f"expected one {kind}, rendered {len(found)}"
    return found[0]


@dataclass
class Workload:
    """The pods a variant runs: their spec, the labels they carry, the serving container."""

    pod: dict
    labels: dict
    annotations: dict
    container: dict


def workload(docs: list[dict]) -> Workload:
    isvcs = objects(docs, "InferenceService")
    if isvcs:
        isvc = isvcs[0]
        predictor = isvc["spec"]["predictor"]
        # The labels KServe puts on predictor pods, plus any the predictor asks for.
        labels = {"serving.kserve.io/inferenceservice": isvc["metadata"]["name"],
                  "component": "predictor", **predictor.get("labels", {})}
        containers = [c for c in predictor["containers"] if c["name"] == "kserve-container"]
        assert len(containers) == 1, "the predictor needs one container named kserve-container"
        return Workload(predictor, labels, predictor.get("annotations", {}), containers[0])
    template = the(docs, "Deployment")["spec"]["template"]
    containers = template["spec"]["containers"]
    assert len(containers) == 1, "the zooserve pod runs one container"
    return Workload(template["spec"], template["metadata"].get("labels", {}),
                    template["metadata"].get("annotations", {}), containers[0])


def all_containers(docs: list[dict]) -> list[dict]:
    """Every container of every object, wherever kustomize would find its image."""
    found = []

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("containers", "initContainers") and isinstance(value, list):
                    found.extend(value)
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(docs)
    return found


def port_named(container: dict, *names: str) -> int | None:
    for port in container.get("ports", []):
        if port.get("name") in names:
            return port["containerPort"]
    return None


def grpc_port(container: dict) -> int | None:
    # KServe recognises gRPC by the port name h2c; the plain Deployment calls it grpc.
    return port_named(container, "grpc", "h2c")


def env_of(container: dict) -> dict[str, dict]:
    return {item["name"]: item for item in container.get("env", [])}


def cpu_cores(quantity: object) -> float:
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


# ---------------------------------------------------------------- the checks


def check_probes(docs: list[dict], variant: str) -> list[str]:
    """Startup, readiness and liveness are native gRPC probes on the declared gRPC port."""
    container = workload(docs).container
    problems = []
    port = grpc_port(container)
    if port is None:
        problems.append("the container declares no gRPC port (named grpc or h2c)")
    for name in PROBES:
        probe = container.get(name)
        if probe is None:
            problems.append(f"{name} is missing")
            continue
        others = {"httpGet", "tcpSocket", "exec"} & probe.keys()
        if "grpc" not in probe or others:
            problems.append(f"{name} must be a grpc probe, has {sorted(probe.keys() - {'grpc'})}")
            continue
        if probe["grpc"].get("port") != port:
            problems.append(f"{name} asks port {probe['grpc'].get('port')!r}, "
                            f"the container's gRPC port is {port}")
        if probe["grpc"].get("service", "") != "":
            problems.append(f"{name} asks health service {probe['grpc']['service']!r}, not ''")
    # A slow pod should leave the endpoints before it is killed.
    window = {name: container.get(name, {}).get("periodSeconds", 10)
              * container.get(name, {}).get("failureThreshold", 3) for name in PROBES}
    if window["livenessProbe"] <= window["readinessProbe"]:
        problems.append(f"livenessProbe gives up after {window['livenessProbe']} s, no later "
                        f"than readinessProbe ({window['readinessProbe']} s)")
    return problems


def check_settings_env(docs: list[dict], variant: str) -> list[str]:
    """The ZOOSERVE_* ports are the declared container ports, on all interfaces, and no
    service-link variables can leak into the ZOOSERVE_* namespace."""
    pods = workload(docs)
    env = env_of(pods.container)
    problems = []
    expected = {
        "ZOOSERVE_GRPC_PORT": grpc_port(pods.container),
        "ZOOSERVE_HTTP_PORT": port_named(pods.container, "http"),
        "ZOOSERVE_METRICS_PORT": port_named(pods.container, "metrics"),
    }
    for name, port in expected.items():
        value = env.get(name, {}).get("value")
        if port is None or value != str(port):
            problems.append(f"{name} is {value!r}, the container port is {port}")
    if env.get("ZOOSERVE_HOST", {}).get("value") != "0.0.0.0":
        problems.append("ZOOSERVE_HOST must be 0.0.0.0 for the kubelet and Services to reach it")
    if env.get("ZOOSERVE_MODELS", {}).get("value") != "/models":
        problems.append("ZOOSERVE_MODELS must be the image's /models")
    if pods.pod.get("enableServiceLinks") is not False:
        problems.append("enableServiceLinks must be false: a Service named zooserve* would "
                        "inject ZOOSERVE_* variables")
    return problems


THREADS = "ZOOSERVE_INFERENCE_THREADS"


def check_threads(docs: list[dict], variant: str) -> list[str]:
    """ZOOSERVE_INFERENCE_THREADS is the container's CPU limit, in whole cores, and ONNX
    Runtime's threads per model are left to the server (auto), which divides the same limit
    among the inference threads."""
    container = workload(docs).container
    problems = []
    if "ZOOSERVE_ORT_THREADS" in env_of(container):
        problems.append("ZOOSERVE_ORT_THREADS is set: leave it auto, or requests x ORT threads "
                        "outnumber the cores")
    ref = env_of(container).get("ZOOSERVE_INFERENCE_THREADS", {}).get("valueFrom", {})
    ref = ref.get("resourceFieldRef")
    if ref is None:
        return ["ZOOSERVE_INFERENCE_THREADS must come from a resourceFieldRef"]
    if ref.get("resource") != "limits.cpu":
        problems.append(f"{THREADS} follows {ref.get('resource')}, not limits.cpu")
    if str(ref.get("divisor", "1")) != "1":
        problems.append(f"{THREADS} divisor is {ref['divisor']}, not 1 (whole cores)")
    if ref.get("containerName", container["name"]) != container["name"]:
        problems.append(f"{THREADS} reads container {ref['containerName']}'s limit")
    limit = container.get("resources", {}).get("limits", {}).get("cpu")
    if limit is None:
        # Without a limit the reference yields the node's allocatable cores.
        problems.append("no CPU limit: ZOOSERVE_INFERENCE_THREADS would be the node's core count")
    elif not cpu_cores(limit).is_integer() or cpu_cores(limit) < 1:
        problems.append(f"CPU limit {limit} is not whole cores: threads would exceed it")
    return problems


def check_resources(docs: list[dict], variant: str) -> list[str]:
    """CPU and memory requests and limits are set; the GPU is a limit only where it belongs."""
    pods = workload(docs)
    resources = pods.container.get("resources", {})
    problems = [f"{kind}.{name} is missing" for kind in ("requests", "limits")
                for name in ("cpu", "memory") if name not in resources.get(kind, {})]
    gpus = resources.get("limits", {}).get(GPU_RESOURCE)
    tolerated = any(t.get("key") == GPU_RESOURCE for t in pods.pod.get("tolerations", []))
    selected = pods.pod.get("nodeSelector", {}).get(GPU_NODE_LABEL) == "true"
    device = env_of(pods.container).get("ZOOSERVE_DEVICE", {}).get("value")
    if variant in GPU_VARIANTS:
        if str(gpus) != "1":
            problems.append(f"limits.{GPU_RESOURCE} is {gpus!r}, not 1")
        if not tolerated:
            problems.append(f"no toleration for {GPU_RESOURCE}")
        if not selected:
            problems.append(f'nodeSelector lacks {GPU_NODE_LABEL}: "true"')
        if device != "cuda":
            problems.append(f"ZOOSERVE_DEVICE is {device!r}: a GPU pod must insist on cuda")
    else:
        if GPU_RESOURCE in json.dumps(docs):
            problems.append(f"the {variant} variant mentions {GPU_RESOURCE}")
        if tolerated or pods.pod.get("nodeSelector"):
            problems.append(f"the {variant} variant has GPU tolerations or a node selector")
        if device != "cpu":
            problems.append(f"ZOOSERVE_DEVICE is {device!r} in the {variant} variant")
    return problems


def check_single_image(docs: list[dict], variant: str) -> list[str]:
    """One image reference across every container of every object, and the expected one."""
    images = {c.get("image") for c in all_containers(docs)}
    if len(images) != 1:
        return [f"image references differ: {sorted(map(str, images))}"]
    (image,) = images
    if variant in EXPECTED_IMAGE and image != EXPECTED_IMAGE[variant]:
        return [f"image is {image}, expected {EXPECTED_IMAGE[variant]}"]
    return []


def check_termination(docs: list[dict], variant: str) -> list[str]:
    """The grace period covers the preStop sleep and then the server's drain."""
    pods = workload(docs)
    drain = env_of(pods.container).get("ZOOSERVE_DRAIN_TIMEOUT", {}).get("value")
    drain_s = DEFAULT_DRAIN_S if drain is None else float(drain)
    command = pods.container.get("lifecycle", {}).get("preStop", {}).get("exec", {})
    command = command.get("command", [])
    if len(command) != 2 or command[0] != "/bin/sleep" or not str(command[1]).isdigit():
        return [f"preStop must be ['/bin/sleep', N], is {command}"]
    sleep_s = int(command[1])
    grace = pods.pod.get("terminationGracePeriodSeconds", 30)
    if sleep_s < 1:
        return ["preStop sleeps 0 s: endpoints are not yet updated when SIGTERM arrives"]
    if grace < sleep_s + drain_s:
        return [f"terminationGracePeriodSeconds {grace} < preStop {sleep_s} s + drain "
                f"{drain_s:g} s"]
    return []


def check_security(docs: list[dict], variant: str) -> list[str]:
    """Non-root 10001, read-only root with a writable /tmp, nothing privileged."""
    pods = workload(docs)
    pod_sc = pods.pod.get("securityContext", {})
    sc = pods.container.get("securityContext", {})
    wanted = {
        "pod runAsNonRoot": (pod_sc.get("runAsNonRoot"), True),
        "pod runAsUser": (pod_sc.get("runAsUser"), 10001),
        "pod runAsGroup": (pod_sc.get("runAsGroup"), 10001),
        "pod seccompProfile": (pod_sc.get("seccompProfile", {}).get("type"), "RuntimeDefault"),
        "readOnlyRootFilesystem": (sc.get("readOnlyRootFilesystem"), True),
        "allowPrivilegeEscalation": (sc.get("allowPrivilegeEscalation"), False),
        "capabilities.drop": (sc.get("capabilities", {}).get("drop"), ["ALL"]),
        "automountServiceAccountToken": (pods.pod.get("automountServiceAccountToken"), False),
    }
    problems = [f"{name} is {got!r}, want {want!r}" for name, (got, want) in wanted.items()
                if got != want]
    for field in ("runAsUser", "runAsGroup"):
        if field in sc and sc[field] != 10001:
            problems.append(f"container {field} {sc[field]} overrides the pod's 10001")
    mounts = {m["mountPath"]: m["name"] for m in pods.container.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pods.pod.get("volumes", [])}
    if "emptyDir" not in volumes.get(mounts.get("/tmp"), {}):
        problems.append("/tmp must be an emptyDir: the root filesystem is read-only")
    return problems


def check_scrape_annotations(docs: list[dict], variant: str) -> list[str]:
    """Prometheus scrapes the pods' metrics port at /metrics."""
    pods = workload(docs)
    notes = pods.annotations
    problems = []
    if notes.get("prometheus.io/scrape") != "true":
        problems.append("prometheus.io/scrape is not 'true'")
    if notes.get("prometheus.io/port") != str(port_named(pods.container, "metrics")):
        problems.append(f"prometheus.io/port {notes.get('prometheus.io/port')!r} is not the "
                        f"metrics port {port_named(pods.container, 'metrics')}")
    if notes.get("prometheus.io/path") != "/metrics":
        problems.append("prometheus.io/path is not /metrics")
    return problems


def check_service_ports(docs: list[dict], variant: str) -> list[str]:
    """The Service's ports are the container's, by name and number, with their protocol."""
    container = workload(docs).container
    declared = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    app_protocol = {"grpc": "kubernetes.io/h2c", "http": "http", "metrics": "http"}
    ports = the(docs, "Service")["spec"]["ports"]
    problems = []
    if {p["name"] for p in ports} != set(declared):
        problems.append(f"Service ports {sorted(p['name'] for p in ports)} are not the "
                        f"container's {sorted(declared)}")
    for port in ports:
        name = port["name"]
        if port.get("targetPort") != name:
            problems.append(f"Service port {name} targets {port.get('targetPort')!r}, not {name}")
        if declared.get(name) != port["port"]:
            problems.append(f"Service port {name} is {port['port']}, the container's is "
                            f"{declared.get(name)}")
        if port.get("appProtocol") != app_protocol.get(name):
            problems.append(f"Service port {name} appProtocol {port.get('appProtocol')!r}, "
                            f"want {app_protocol.get(name)!r}")
    return problems


def check_selectors(docs: list[dict], variant: str) -> list[str]:
    """The Service, HPA, PDB and spread constraints all find the Deployment's pods."""
    pods = workload(docs)
    problems = []
    for kind in ("Service", "PodDisruptionBudget"):
        for obj in objects(docs, kind):
            spec = obj["spec"]
            selector = spec["selector"] if kind == "Service" else spec["selector"]["matchLabels"]
            if not selects(selector, pods.labels):
                problems.append(f"{kind} {obj['metadata']['name']} selector {selector} "
                                f"misses the pods' labels {pods.labels}")
    for pdb in objects(docs, "PodDisruptionBudget"):
        if pdb["spec"].get("maxUnavailable") != 1 or "minAvailable" in pdb["spec"]:
            problems.append("PodDisruptionBudget must be maxUnavailable: 1")
    for constraint in pods.pod.get("topologySpreadConstraints", []):
        if not selects(constraint["labelSelector"]["matchLabels"], pods.labels):
            problems.append(f"topology spread on {constraint['topologyKey']} misses the pods")
    for deployment in objects(docs, "Deployment"):
        if not selects(deployment["spec"]["selector"]["matchLabels"], pods.labels):
            problems.append("the Deployment's selector misses its own pod template")
        if "replicas" in deployment["spec"] and objects(docs, "HorizontalPodAutoscaler"):
            problems.append("the Deployment sets replicas, which fights the autoscaler")
        for hpa in objects(docs, "HorizontalPodAutoscaler"):
            target = hpa["spec"]["scaleTargetRef"]
            wanted = {"apiVersion": deployment["apiVersion"], "kind": "Deployment",
                      "name": deployment["metadata"]["name"]}
            if target != wanted:
                problems.append(f"HorizontalPodAutoscaler targets {target}, not {wanted}")
            if hpa["spec"].get("minReplicas", 1) < 2:
                problems.append("HorizontalPodAutoscaler minReplicas below 2: one drain stops "
                                "the service")
    return problems


def check_inference_service(docs: list[dict], variant: str) -> list[str]:
    """The InferenceService fields that no schema here knows: KServe's CRD."""
    isvc = the(docs, "InferenceService")
    problems = []
    if isvc.get("apiVersion") != "serving.kserve.io/v1beta1":
        problems.append(f"apiVersion {isvc.get('apiVersion')}, not serving.kserve.io/v1beta1")
    notes = isvc["metadata"].get("annotations", {})
    if notes.get("serving.kserve.io/deploymentMode") not in KSERVE_DEPLOYMENT_MODES:
        problems.append("deploymentMode must be Standard (RawDeployment before KServe 0.16)")
    if notes.get("serving.kserve.io/autoscalerClass") != "hpa":
        problems.append("autoscalerClass must be hpa in Standard mode")
    predictor = isvc["spec"]["predictor"]
    if set(isvc["spec"]) != {"predictor"}:
        problems.append(f"spec has {sorted(isvc['spec'])}: a custom predictor only")
    if len(predictor.get("containers", [])) != 1:
        problems.append("a custom predictor with exactly one container")
    ports = workload(docs).container.get("ports", [])
    # KServe makes the first port the predictor Service's port 80; h2c marks it as gRPC.
    if not ports or ports[0].get("name") != "h2c" or ports[0].get("containerPort") != 8001:
        problems.append(f"the first container port must be h2c 8001, is {ports[:1]}")
    if len({p.get("name") for p in ports}) != len(ports):
        problems.append("container port names repeat")
    low, high = predictor.get("minReplicas", 1), predictor.get("maxReplicas", 0)
    if not (isinstance(low, int) and isinstance(high, int) and 2 <= low <= high):
        problems.append(f"replicas must satisfy 2 <= minReplicas <= maxReplicas (one drain "
                        f"must not stop the service), got {low}, {high}")
    if predictor.get("scaleMetric") != "cpu" or not isinstance(predictor.get("scaleTarget"), int):
        problems.append("scale on cpu with an integer scaleTarget")
    if env_of(workload(docs).container).get("PROTOCOL", {}).get("value") != "v2":
        problems.append("PROTOCOL must be v2 (the Open Inference Protocol)")
    return problems


# (check, the variants it applies to)
CHECKS: dict[str, tuple[Callable[[list[dict], str], list[str]], tuple[str, ...]]] = {
    "probes": (check_probes, tuple(VARIANTS)),
    "settings_env": (check_settings_env, tuple(VARIANTS)),
    "threads": (check_threads, tuple(VARIANTS)),
    "resources": (check_resources, tuple(VARIANTS)),
    "single_image": (check_single_image, tuple(VARIANTS)),
    "termination": (check_termination, tuple(VARIANTS)),
    "security": (check_security, tuple(VARIANTS)),
    "scrape_annotations": (check_scrape_annotations, tuple(VARIANTS)),
    "service_ports": (check_service_ports, DEPLOYMENT_VARIANTS),
    "selectors": (check_selectors, tuple(VARIANTS)),
    "inference_service": (check_inference_service, ("kserve",)),
}
