"""`zooserve image build --model-only`: an image that holds only model version folders.

The image is `FROM scratch` with one layer, `/models/<name>/<version>/...`: no OS, no Python,
no shell, a few MB for the zoo's models. Nothing in it runs. A cluster mounts it as an
`image` volume beside the unchanged server image (deploy/k8s/components/model-images), so a
model changes without rebuilding the 396 MB server image.

It is labelled like the artifact `zooserve push` sends (zooserve.registry.annotations): the
card's title, description, version, created, source, task and metrics, and the sha256 of
every file, so `docker image inspect` and `skopeo inspect` tell what it holds before it is
pulled: for one version, exactly the artifact's annotations. An image may carry several
versions (a library with its embedding model): the labels then describe the first one named
(a library's with its embedding model), and one more, `io.zooserve.models`, lists every
version it carries as the server image's label does.

It is built by `docker build` from a temporary context holding copies of the version folders:
no network, no base image, nothing of the project but the files named."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from zooserve.registry.annotations import version_annotations, version_files
from zooserve.repository.layout import (
    find_version,
    library_embedding_model,
    served_file,
    sha256_of_file,
)

# What an image carries, `name:version@sha256:<served file>,...`: the server image's label too.
MODELS_LABEL = "io.zooserve.models"
# Where the versions sit in the image: what a volume mount's subPath names (`models/<name>`).
IMAGE_MODELS_FOLDER = "models"
DOCKERFILE = "FROM scratch\nCOPY models/ /models/\n"
# An image name's path component, as the OCI distribution spec spells it.
_NAME_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")


class ModelImageError(Exception):
    """The request cannot be built; the message says why in one line."""


@dataclass(frozen=True)
class CarriedVersion:
    name: str
    version: int
    folder: Path
    served_file: Path  # model.onnx, or a library's library.json

    @property
    def label(self) -> str:
        return f"{self.name}:{self.version}@sha256:{sha256_of_file(self.served_file)}"


@dataclass(frozen=True)
class ModelImagePlan:
    """Everything the build needs, worked out before anything runs."""

    tag: str
    versions: tuple[CarriedVersion, ...]
    labels: dict[str, str]
    notes: tuple[str, ...]  # what the image leaves to another one (a library's embedding model)


def resolve_versions(root: Path, specs: list[str]) -> tuple[CarriedVersion, ...]:
    """The version folders the specs (NAME or NAME:VERSION) name, in order, each once."""
    chosen: dict[tuple[str, int], CarriedVersion] = {}
    for spec in specs:
        try:
            name, version, folder = find_version(root, spec)
        except (ValueError, LookupError) as exc:
            raise ModelImageError(str(exc)) from None
        chosen.setdefault((name, version),
                          CarriedVersion(name, version, folder, served_file(folder)))
    return tuple(chosen.values())


def embedding_model_of(version: CarriedVersion) -> tuple[str, int, str] | None:
    """A library's embedding model as (name, version, sha256 of its model.onnx); None for a
    model."""
    try:
        return library_embedding_model(version.folder)
    except ValueError as exc:
        raise ModelImageError(str(exc)) from None


def default_tag(first: CarriedVersion) -> str:
    """`zooserve-model-<name>:<version>`, the name as an image name may spell it."""
    name = first.name.lower()
    if not _NAME_COMPONENT.fullmatch(name):
        name = re.sub(r"[^a-z0-9]+", "-", name).strip("-") or "model"
    return f"zooserve-model-{name}:{first.version}"


def plan_model_image(root: Path, specs: list[str], tag: str | None = None) -> ModelImagePlan:
    """Check the request against the repository and work out the image's labels."""
    if not specs:
        raise ModelImageError("--model-only needs --models NAME[:VERSION] ...: the versions "
                              "the image carries")
    versions = resolve_versions(root, specs)
    first = versions[0]
    notes = []
    embedding = None
    for version in versions:
        wanted = embedding_model_of(version)
        if wanted is None:
            continue
        name, number, digest = wanted
        if version is first:
            embedding = f"{name}:{number}@sha256:{digest}"
        carried = [v for v in versions if (v.name, v.version) == (name, number)]
        if not carried:
            notes.append(f"{version.name}:{version.version} searches with {name}:{number}, "
                         "which this image does not carry: serve it beside that model")
        elif sha256_of_file(carried[0].served_file) != digest:
            raise ModelImageError(f"{version.name}:{version.version} was embedded with "
                                  f"{name}:{number} of sha256 {digest[:12]}..., but "
                                  f"{carried[0].served_file} differs")
    labels = version_annotations(first.folder, first.name, first.version, embedding)
    if len(versions) > 1:  # one version: exactly the artifact's annotations
        labels[MODELS_LABEL] = ",".join(v.label for v in versions)
    return ModelImagePlan(tag or default_tag(first), versions, labels, tuple(notes))


def write_build_context(plan: ModelImagePlan, context: Path) -> None:
    """The Dockerfile and a copy of each version folder's files under models/. Files are
    0644 and folders 0755 in the image whatever they are here: the server runs as a non-root
    user and an image volume is mounted as it is."""
    (context / "Dockerfile").write_text(DOCKERFILE)
    for version in plan.versions:
        target = context / IMAGE_MODELS_FOLDER / version.name / str(version.version)
        for relative, source in version_files(version.folder):
            destination = target / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, destination)
            destination.chmod(0o644)
    for folder in [context / IMAGE_MODELS_FOLDER, *(context / IMAGE_MODELS_FOLDER).rglob("*")]:
        if folder.is_dir():
            folder.chmod(0o755)


def build_command(docker: str, plan: ModelImagePlan, context: Path) -> list[str]:
    command = [docker, "build", "--network", "none", "-t", plan.tag]
    for key, value in plan.labels.items():
        command += ["--label", f"{key}={value}"]
    return [*command, str(context)]


def build_model_image(docker: str, plan: ModelImagePlan) -> float:
    """Build the planned image; the seconds it took. A failed build is one line
    (SystemExit) with docker's own reason."""
    carried = ", ".join(f"{v.name}:{v.version}" for v in plan.versions)
    print(f"building {plan.tag} (model-only) with {carried}", file=sys.stderr)
    for note in plan.notes:
        print(f"note: {note}", file=sys.stderr)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="zooserve-model-image-") as folder:
        context = Path(folder)
        write_build_context(plan, context)
        done = subprocess.run(build_command(docker, plan, context),
                              capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"zooserve image build: error: docker build failed: "
                         f"{_reason(done)}")
    return time.monotonic() - started


def _reason(done: subprocess.CompletedProcess) -> str:
    """docker's own last word on what failed, without its usage text and notices."""
    said = [line.strip() for line in (done.stderr or done.stdout).splitlines()
            if line.strip() and not line[0].isspace()
            and not line.startswith(("See '", "Run '", "Usage:", "DEPRECATED:"))]
    failed = [line for line in said if re.search(r"error|invalid|failed|cannot", line, re.I)]
    return (failed or said or [f"exit status {done.returncode}"])[-1]
