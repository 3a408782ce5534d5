"""`zooserve image build`: the project's Dockerfile built with the right arguments, so that a
model (or the whole zoo) becomes a container image in one command; with `--model-only`, an
image of the model version folders alone (zooserve/model_image.py).

The image is labelled with the models it carries (name, version and the sha256 of each
model.onnx), which `docker image inspect` shows to whoever receives it."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from zooserve.model_image import (
    MODELS_LABEL,
    ModelImageError,
    build_model_image,
    plan_model_image,
)

ROOT = Path(__file__).resolve().parent.parent
CUDA_REQUIREMENTS = {"13": "requirements-gpu-cuda13.txt", "12": "requirements-gpu-cuda12.txt"}


class ImageError(Exception):
    """The build cannot start or failed; the message says why in one line."""


@dataclass(frozen=True)
class BuildPlan:
    """Everything `docker build` is run with, worked out before anything runs."""

    tag: str
    target: str
    models: tuple[str, ...]  # empty: every model in the repository
    models_label: str
    build_args: dict[str, str]

    def command(self, docker: str, context: Path, secrets: dict[str, Path]) -> list[str]:
        command = [docker, "build", "--network", "host", "--target", self.target, "-t", self.tag]
        for key, value in self.build_args.items():
            command += ["--build-arg", f"{key}={value}"]
        command += ["--label", f"{MODELS_LABEL}={self.models_label}"]
        for name, path in secrets.items():
            command += ["--secret", f"id={name},src={path}"]
        return [*command, str(context)]


def plan_build(
    repository: Path,
    models: list[str] | None,
    tag: str | None,
    gpu: bool,
    base: str | None,
    cuda: str = "13",
) -> BuildPlan:
    """Check the request against the repository and work out the build's arguments."""
    from zooserve.repository.layout import select_models, sha256_of_file

    chosen = tuple(dict.fromkeys(models or ()))
    try:
        carried = select_models(repository, chosen or None)
    except (FileNotFoundError, LookupError) as exc:
        raise ImageError(str(exc)) from None
    if not carried:
        raise ImageError(f"no models in {repository}: an image without models serves nothing")
    label = ",".join(f"{e.name}:{e.version}@sha256:{sha256_of_file(e.path)}" for e in carried)
    target = "gpu" if gpu else "cpu"
    if cuda not in CUDA_REQUIREMENTS:
        raise ImageError(f"--cuda must be one of {', '.join(CUDA_REQUIREMENTS)}, got {cuda}")
    if tag is None:
        name = "zooserve" if not chosen else "zooserve-" + "-".join(chosen)
        tag = f"{name}:{target}"
    build_args = {
        "MODELS": ",".join(chosen),
        "VERSION": _project_version(),
        "SOURCE": _git("remote", "get-url", "origin"),
        "REVISION": _git("rev-parse", "HEAD"),
    }
    if gpu:
        build_args["GPU_REQUIREMENTS"] = CUDA_REQUIREMENTS[cuda]
    if base:
        build_args["BASE"] = base
    return BuildPlan(tag, target, chosen, label, build_args)


def _project_version() -> str:
    text = (ROOT / "pyproject.toml").read_text()
    found = re.search(r'^version\s*=\s*"([^"]+)"', text, re.MULTILINE)
    return found.group(1) if found else "unknown"


def _git(*args: str) -> str:
    try:
        done = subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def pip_secrets(folder: Path) -> dict[str, Path]:
    """This machine's pip index settings and CA bundle, as files for BuildKit secrets.

    Inside the build, pip knows only what it is told: the index URLs this machine's pip uses
    (local `file:` indexes are left out, they do not exist in the build) and the certificates
    it trusts. Secrets are mounted for one RUN and never stored in the image."""
    settings = _pip_config()
    lines = ["[global]"]
    for key in ("index-url", "extra-index-url", "trusted-host"):
        values = [v for v in settings.get(key, "").split() if not v.startswith("file:")]
        if values:
            lines.append(f"{key} = {' '.join(values)}")
    secrets: dict[str, Path] = {}
    cert = settings.get("cert") or os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE")
    if cert and Path(cert).is_file():
        secrets["cacert"] = Path(cert)
        lines.append("cert = /run/secrets/cacert")
    if len(lines) > 1:
        conf = folder / "pip.conf"
        conf.write_text("\n".join(lines) + "\n")
        secrets["pipconf"] = conf
    return secrets


def _pip_config() -> dict[str, str]:
    """`pip config list` of this interpreter, plus PIP_* variables, keys without their scope."""
    found: dict[str, str] = {}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"],
            capture_output=True, text=True, timeout=30,
        )
        listing = done.stdout
    except (OSError, subprocess.TimeoutExpired):
        listing = ""
    for line in listing.splitlines():
        key, _, value = line.partition("=")
        found[key.rsplit(".", 1)[-1]] = value.strip().strip("'\"")
    for key in ("index-url", "extra-index-url", "trusted-host", "cert"):
        variable = "PIP_" + key.upper().replace("-", "_")
        if os.environ.get(variable):
            found[key] = os.environ[variable]
    return found


def image_size(docker: str, tag: str) -> int:
    done = subprocess.run(
        [docker, "image", "inspect", "--format", "{{.Size}}", tag], capture_output=True, text=True
    )
    return int(done.stdout.strip()) if done.returncode == 0 else -1


def _docker() -> str:
    """The docker client to run: $DOCKER, else the one on PATH."""
    named = os.environ.get("DOCKER")
    docker = shutil.which(named) if named else shutil.which("docker")
    if docker is None:
        raise SystemExit(f"zooserve image build: error: DOCKER={named} is no executable"
                         if named else "zooserve image build: error: no `docker` on PATH "
                         "(or set DOCKER)")
    return docker


def build(args: argparse.Namespace) -> int:
    if args.model_only:
        return _build_model_only(args)
    if args.repository is not None:
        raise SystemExit("zooserve image build: error: --repository is for --model-only: the "
                         "server image carries the project's models/")
    try:
        plan = plan_build(ROOT / "models", args.models, args.tag, args.gpu, args.base, args.cuda)
    except ImageError as exc:
        raise SystemExit(f"zooserve image build: error: {exc}") from None
    docker = _docker()
    print(f"building {plan.tag} ({plan.target}) with {plan.models_label}", file=sys.stderr)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as folder:
        command = plan.command(docker, ROOT, pip_secrets(Path(folder)))
        done = subprocess.run(command, env={**os.environ, "DOCKER_BUILDKIT": "1"})
    if done.returncode != 0:
        raise SystemExit(f"zooserve image build: error: docker build failed ({done.returncode})")
    seconds = time.monotonic() - started
    size = image_size(docker, plan.tag)
    print(f"{plan.tag}  {size / 1e6:.0f} MB  built in {seconds:.0f} s")
    return 0


def _build_model_only(args: argparse.Namespace) -> int:
    """The request is checked against the repository before docker is looked for."""
    if args.gpu:
        raise SystemExit("zooserve image build: error: --gpu is for the server image: a "
                         "model-only image holds files and runs nothing")
    root = Path(args.repository) if args.repository else ROOT / "models"
    try:
        plan = plan_model_image(root, args.models or [], args.tag)
    except ModelImageError as exc:
        raise SystemExit(f"zooserve image build: error: {exc}") from None
    docker = _docker()
    seconds = build_model_image(docker, plan)
    size = image_size(docker, plan.tag)
    print(f"{plan.tag}  {size / 1e6:.2f} MB  built in {seconds:.0f} s")
    return 0


def add_image_commands(commands: argparse._SubParsersAction) -> None:
    image = commands.add_parser("image", help="build a container image carrying the models")
    actions = image.add_subparsers(dest="image_command", required=True)
    build_parser = actions.add_parser(
        "build",
        help="docker build the image (CPU, or --gpu) with all models or the ones named",
        description="Builds the project's Dockerfile. The image serves its models with "
        "`zooserve serve` on gRPC port 8001 (metrics on 8002). Without --tag the image is "
        "zooserve:cpu (or :gpu), or zooserve-<models>:cpu when models are named. With "
        "--model-only, an image FROM scratch holding only the named version folders at "
        "/models/<name>/<version>/, labelled like a pushed artifact "
        "(zooserve-model-<name>:<version> unless --tag).",
    )
    build_parser.add_argument(
        "--models", nargs="+", metavar="NAME[:VERSION]",
        help="the models of the project's models/ that the image carries [all]; with "
        "--model-only, the versions (the highest when none is given)",
    )
    build_parser.add_argument(
        "--model-only", action="store_true",
        help="an image of the model files alone (no OS, no Python), to mount as a volume "
        "beside the server image",
    )
    build_parser.add_argument(
        "--repository", metavar="DIR",
        help="with --model-only: the model repository to take the versions from "
        "[the project's models/]",
    )
    build_parser.add_argument(
        "--tag", help="image name:tag [zooserve:cpu; zooserve-model-<name>:<version>]")
    build_parser.add_argument("--gpu", action="store_true", help="the CUDA image (onnxruntime-gpu)")
    build_parser.add_argument(
        "--cuda", default="13", choices=sorted(CUDA_REQUIREMENTS),
        help="CUDA major version of the gpu image: 13 needs host driver >= 580 [13]",
    )
    build_parser.add_argument(
        "--base", default=os.environ.get("ZOOSERVE_IMAGE_BASE"),
        help="base image [ZOOSERVE_IMAGE_BASE, python:3.11-slim-bookworm]",
    )
    build_parser.set_defaults(func=build)
