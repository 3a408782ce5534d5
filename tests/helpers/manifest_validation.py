"""Strict schema validation of rendered manifests, shared by the deploy tests of the base
variants (test_deploy_manifests.py) and of the model-source variants
(test_deploy_model_sources.py)."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.helpers.manifests import (
    KSERVE_EXTENSION_FIELDS,
    SCHEMA_VERSIONS,
    kubernetes_validate,
    workload,
)


def predictor_as_pod(docs: list[dict]) -> dict:
    """The predictor minus KServe's own fields is a Pod spec: validated as a Pod."""
    pods = workload(docs)
    spec = {k: v for k, v in pods.pod.items() if k not in KSERVE_EXTENSION_FIELDS}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "zooserve-predictor", "labels": pods.labels,
                         "annotations": pods.annotations},
            "spec": spec}


def assert_strictly_valid(docs: list[dict], path: Path, kserve: bool,
                          schema_versions: tuple[str, ...] = SCHEMA_VERSIONS) -> None:
    """`kubernetes-validate --strict` passes every resource against every schema version.
    It passes, with a WARN, any kind it has no schema for: only the InferenceService (a CRD)
    may be one, which is why a KServe predictor is also validated as a Pod."""
    docs = [*docs, predictor_as_pod(docs)] if kserve else list(docs)
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    run = kubernetes_validate(path, schema_versions)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    warned = [line for line in output.splitlines() if line.startswith("WARN")]
    assert all("InferenceService" in line for line in warned), output
    for doc in docs:
        if doc["kind"] == "InferenceService":
            continue
        resource = f"{doc['kind'].lower()}/{doc['metadata']['name']}"
        for version in schema_versions:
            minor = ".".join(version.split(".")[:2])
            assert f"passed for resource {resource} against version {minor}" in output, output
