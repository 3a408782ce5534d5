"""The deploy variants whose models come from a registry instead of the server image
(tests/test_deploy_model_sources.py): an init container running `zooserve pull` into an
emptyDir (deploy/k8s/components/models-pull, with verify-models for signed models only and
registry-ca for a private CA), and model-only images mounted as `image` volumes
(deploy/k8s/components/model-images and deploy/kserve-model-images).

Each variant also passes the checks of the variant it is made from (tests/helpers/manifests.py
CHECKS, run as `cpu` or `kserve`); the checks here are what the models' source adds. Each
returns the problems it finds, so the tests can break a manifest on purpose and see it."""

from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path, PurePosixPath

from tests.helpers.manifests import (
    SCHEMA_VERSIONS,
    env_of,
    render,
    workload,
)
from tests.helpers.paths import DEPLOY
from zooserve.repository.layout import model_name_problem

# variant: (folder, the variant of tests/helpers/manifests.py it is made from)
MODEL_SOURCE_VARIANTS = {
    "cpu-models-pull": (DEPLOY / "k8s" / "overlays" / "cpu-models-pull", "cpu"),
    "cpu-model-images": (DEPLOY / "k8s" / "overlays" / "cpu-model-images", "cpu"),
    "kserve-model-images": (DEPLOY / "kserve-model-images", "kserve"),
}
PULL_VARIANTS = ("cpu-models-pull", "cpu-models-pull-ca")
VERIFY_KEYS = "/etc/zooserve/verify-keys"  # components/verify-models: a ConfigMap of .pem keys
IMAGE_VOLUME_VARIANTS = ("cpu-model-images", "kserve-model-images")
# The schemas of kubernetes-validate 1.27 have no `image` volume (1.31 brought it, alpha).
# The image-volume variants claim Kubernetes 1.33, the first with subPath on image volumes
# (beta; the feature gate is on by default from 1.35), and are also validated against the
# newest schema kubernetes-validate 1.37.0 carries.
IMAGE_VOLUME_SCHEMA_VERSIONS = ("1.33.0", "1.37.0")
PULL_CONTAINER = "pull-models"
MODELS_PATH = "/models"
DOCKER_CONFIG_KEY = ".dockerconfigjson"  # the key of a kubernetes.io/dockerconfigjson Secret
# A registry reference with a host and a tag or a digest: what a pod can pull again.
REFERENCE = re.compile(
    r"[A-Za-z0-9.-]+(?::[0-9]+)?/[a-z0-9._/-]+(?::[A-Za-z0-9_][A-Za-z0-9._-]{0,127}"
    r"|@sha256:[a-f0-9]{64})")
HARDENED = {"runAsNonRoot": True, "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True}


def schema_versions(variant: str) -> tuple[str, ...]:
    return IMAGE_VOLUME_SCHEMA_VERSIONS if variant in IMAGE_VOLUME_VARIANTS else SCHEMA_VERSIONS


def render_pull_with_registry_ca(kubectl: str, scratch: Path) -> list[dict]:
    """cpu-models-pull with components/registry-ca, as its comment says to add it: rendered
    from a copy of deploy/ (kustomize reads no kustomization outside the tree it renders)."""
    copy = scratch / "deploy"
    shutil.copytree(DEPLOY, copy)
    overlay = copy / "k8s" / "overlays" / "cpu-models-pull-ca"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        "resources:\n  - ../cpu-models-pull\ncomponents:\n  - ../../components/registry-ca\n")
    return render(kubectl, overlay)



# ---------------------------------------------------------------- reading the pod


def volumes_of(pod: dict) -> dict[str, dict]:
    return {volume["name"]: volume for volume in pod.get("volumes", [])}


def mounts_of(container: dict) -> dict[str, dict]:
    """A container's volume mounts by mount path."""
    return {mount["mountPath"]: mount for mount in container.get("volumeMounts", [])}


def pull_arguments(container: dict) -> argparse.Namespace | str:
    """The init container's command line read as `zooserve pull` reads it (its documented
    flags), or why it is not one."""
    command = [*container.get("command", []), *container.get("args", [])]
    if command[:2] != ["zooserve", "pull"]:
        return f"the init container runs {command[:2]}, not zooserve pull"
    parser = argparse.ArgumentParser(exit_on_error=False, add_help=False)
    parser.add_argument("references", nargs="+")
    parser.add_argument("--name")
    parser.add_argument("--models")
    parser.add_argument("--plain-http", action="store_true")
    parser.add_argument("--tls-ca")
    parser.add_argument("--verify-key", action="append", default=[])
    try:
        arguments, unknown = parser.parse_known_args(command[2:])
    except argparse.ArgumentError as exc:
        return f"zooserve pull {' '.join(command[2:])}: {exc}"
    if unknown:
        return f"zooserve pull takes no {unknown}"
    return arguments


# ---------------------------------------------------------------- the checks


def check_models_pull(docs: list[dict], variant: str) -> list[str]:
    """One init container, the server's own image, runs `zooserve pull` into the emptyDir the
    server reads as /models, with the registry's credentials from a dockerconfigjson Secret
    as DOCKER_CONFIG, and as locked down as the server."""
    pods = workload(docs)
    inits = pods.pod.get("initContainers", [])
    if [c.get("name") for c in inits] != [PULL_CONTAINER]:
        return [f"want one init container, {PULL_CONTAINER}; have "
                f"{[c.get('name') for c in inits]}"]
    pull = inits[0]
    problems = []
    if pull.get("image") != pods.container.get("image"):
        problems.append(f"the pull runs {pull.get('image')}, the server "
                        f"{pods.container.get('image')}: one image")
    arguments = pull_arguments(pull)
    if isinstance(arguments, str):
        return [*problems, arguments]
    if arguments.models != MODELS_PATH:
        problems.append(f"zooserve pull --models is {arguments.models!r}, not {MODELS_PATH}")
    if arguments.plain_http:
        problems.append("--plain-http: the registry credentials would cross the network in clear")
    problems += [f"reference {ref!r} names no registry host and tag or digest"
                 for ref in arguments.references if not REFERENCE.fullmatch(ref)]
    volumes = volumes_of(pods.pod)
    pull_mounts, served_mounts = mounts_of(pull), mounts_of(pods.container)
    written, served = pull_mounts.get(MODELS_PATH), served_mounts.get(MODELS_PATH)
    if written is None or served is None or written["name"] != served["name"]:
        problems.append(f"the pull and the server must mount one volume at {MODELS_PATH}")
    else:
        if "emptyDir" not in volumes.get(written["name"], {}):
            problems.append(f"{MODELS_PATH} must be an emptyDir: each pod pulls its own")
        if written.get("readOnly"):
            problems.append(f"the pull's {MODELS_PATH} is readOnly: it cannot write the models")
        if served.get("readOnly") is not True:
            problems.append(f"the server's {MODELS_PATH} must be readOnly")
    problems += _check_docker_config(pull, volumes)
    if arguments.tls_ca:
        problems += _check_mounted_file(pull, volumes, arguments.tls_ca, "--tls-ca")
    problems += _check_verify_keys(pull, pods.container, arguments, volumes)
    context = pull.get("securityContext", {})
    problems += [f"the pull's {field} is {context.get(field)!r}, want {want!r}"
                 for field, want in HARDENED.items() if context.get(field) != want]
    if context.get("capabilities", {}).get("drop") != ["ALL"]:
        problems.append("the pull must drop ALL capabilities")
    if "emptyDir" not in volumes.get(pull_mounts.get("/tmp", {}).get("name"), {}):
        problems.append("the pull needs an emptyDir at /tmp: its root filesystem is read-only")
    limits = pull.get("resources", {}).get("limits", {})
    problems += [f"the pull has no limits.{name}" for name in ("cpu", "memory")
                 if name not in limits]
    return problems


def _check_docker_config(pull: dict, volumes: dict[str, dict]) -> list[str]:
    """DOCKER_CONFIG is a folder where a dockerconfigjson Secret is mounted as config.json."""
    folder = env_of(pull).get("DOCKER_CONFIG", {}).get("value")
    if folder is None:
        return ["the pull has no DOCKER_CONFIG: it would find no registry credentials"]
    mount = mounts_of(pull).get(folder)
    secret = volumes.get(mount["name"], {}).get("secret") if mount else None
    if secret is None:
        return [f"DOCKER_CONFIG {folder} is no mounted Secret"]
    items = {item["key"]: item["path"] for item in secret.get("items", [])}
    if items.get(DOCKER_CONFIG_KEY) != "config.json":
        return [f"the Secret {secret.get('secretName')} must give its {DOCKER_CONFIG_KEY} as "
                f"config.json, gives {items}"]
    if mount.get("readOnly") is not True:
        return [f"the credentials at {folder} must be mounted readOnly"]
    return []


def _check_mounted_file(container: dict, volumes: dict[str, dict], path: str,
                        what: str) -> list[str]:
    """A file (or a folder of them) a setting names is a ConfigMap or Secret mounted in the
    container: the folder it is mounted at, or a file in it."""
    mounts = mounts_of(container)
    if path in mounts:
        mount, name = mounts[path], None
    else:
        mount, name = mounts.get(str(PurePosixPath(path).parent)), PurePosixPath(path).name
    volume = volumes.get(mount["name"], {}) if mount else {}
    source = volume.get("configMap") or volume.get("secret")
    if source is None:
        return [f"{what} {path}: no ConfigMap or Secret is mounted there in "
                f"{container.get('name')}"]
    paths = [item["path"] for item in source.get("items", [])]
    if name is not None and paths and name not in paths:
        return [f"{what} {path}: the volume {mount['name']} gives only {paths}"]
    return []


def _check_verify_keys(pull: dict, server: dict, arguments: argparse.Namespace,
                       volumes: dict[str, dict]) -> list[str]:
    """The keys the pull verifies with (--verify-key, else ZOOSERVE_VERIFY_KEY) are mounted,
    and the server verifies with the same keys: what was refused at the pull is not served
    either, and what the pull let in is checked again at every load."""
    from_environment = env_of(pull).get("ZOOSERVE_VERIFY_KEY", {}).get("value")
    keys = arguments.verify_key or (from_environment.split(":") if from_environment else [])
    served = env_of(server).get("ZOOSERVE_VERIFY_KEY", {}).get("value")
    problems = []
    for key in keys:
        problems += _check_mounted_file(pull, volumes, key, "verification key")
    if served and served.split(":") != keys:
        problems.append(f"the server verifies with {served}, the pull with {keys}")
    elif keys and not served:
        problems.append(f"the pull verifies with {keys} but the server verifies nothing")
    for key in served.split(":") if served else []:
        problems += _check_mounted_file(server, volumes, key, "verification key")
    return problems


def check_model_images(docs: list[dict], variant: str) -> list[str]:
    """Each `image` volume (a tagged reference) is mounted read-only at /models/<name> with
    subPath models/<name>, the layout of a model-only image, over an empty /models; nothing
    runs but the server."""
    pods = workload(docs)
    volumes = volumes_of(pods.pod)
    images = {name: volume["image"] for name, volume in volumes.items() if "image" in volume}
    problems = [] if images else ["no image volume"]
    for name, source in images.items():
        reference = source.get("reference", "")
        if not REFERENCE.fullmatch(reference) or reference.endswith(":latest"):
            problems.append(f"image volume {name}: {reference!r} is no tagged reference (a "
                            "tag other than latest, or a digest)")
        if source.get("pullPolicy") not in ("IfNotPresent", "Always"):
            problems.append(f"image volume {name}: pullPolicy {source.get('pullPolicy')!r}")
    mounts = pods.container.get("volumeMounts", [])
    paths = [mount["mountPath"] for mount in mounts]
    if len(paths) != len(set(paths)):
        problems.append(f"mount paths repeat: {sorted(paths)}")
    models = mounts_of(pods.container).get(MODELS_PATH)
    if models is None or "emptyDir" not in volumes.get(models["name"], {}):
        problems.append(f"{MODELS_PATH} must be an emptyDir: else the models the server image "
                        "carries are served too")
    elif models.get("readOnly"):
        problems.append(f"{MODELS_PATH} is readOnly: the runtime makes the mount points in it")
    mounted = set()
    for mount in mounts:
        if mount["name"] not in images:
            continue
        mounted.add(mount["name"])
        path = PurePosixPath(mount["mountPath"])
        if str(path.parent) != MODELS_PATH or model_name_problem(path.name):
            problems.append(f"{mount['name']} is mounted at {path}, not {MODELS_PATH}/<name>")
        elif mount.get("subPath") != f"models/{path.name}":
            problems.append(f"{path} mounts subPath {mount.get('subPath')!r}, not "
                            f"models/{path.name}: a model-only image holds "
                            "/models/<name>/<version>/")
        if mount.get("readOnly") is not True:
            problems.append(f"{path} must be mounted readOnly")
    problems += [f"image volume {name} is mounted nowhere" for name in images.keys() - mounted]
    if pods.pod.get("initContainers"):
        problems.append("init containers beside image volumes: nothing but the server runs")
    return problems
