"""`zooserve image build --model-only` before Docker runs: which versions an image carries,
its labels and tag, and every mistake as one line naming the thing at fault. No engine is
needed (tests/test_model_only_image.py builds and pushes the images)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from tests.helpers.paths import MODELS, ROOT
from zooserve.model_image import (
    MODELS_LABEL,
    ModelImageError,
    default_tag,
    plan_model_image,
    write_build_context,
)
from zooserve.registry.annotations import FILES, version_annotations


def zooserve_image_build(*args: str) -> subprocess.CompletedProcess:
    """The command as a user runs it, with a DOCKER that does not exist: what fails must
    fail before Docker is looked for."""
    return subprocess.run(
        [sys.executable, "-m", "zooserve", "image", "build", *args],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "DOCKER": "/nonexistent"},
    )


def test_one_version_is_labelled_exactly_like_its_artifact():
    plan = plan_model_image(MODELS, ["penguins"])
    assert plan.tag == "zooserve-model-penguins:1"
    assert [(v.name, v.version) for v in plan.versions] == [("penguins", 1)]
    assert plan.labels == version_annotations(MODELS / "penguins" / "1", "penguins", 1)
    assert plan.notes == ()


def test_a_library_with_its_embedding_model_lists_both():
    plan = plan_model_image(MODELS, ["spectra_search:1", "spectra_embedding", "spectra_search"])
    assert [(v.name, v.version) for v in plan.versions] == [
        ("spectra_search", 1), ("spectra_embedding", 1)]
    assert plan.labels["io.zooserve.model.name"] == "spectra_search"
    assert plan.labels["io.zooserve.embedding-model"].startswith("spectra_embedding:1@sha256:")
    carried = plan.labels[MODELS_LABEL].split(",")
    assert [entry.split("@")[0] for entry in carried] == ["spectra_search:1",
                                                         "spectra_embedding:1"]
    alone = plan_model_image(MODELS, ["spectra_search"])
    assert alone.notes and "spectra_embedding:1" in alone.notes[0]
    assert MODELS_LABEL not in alone.labels


def test_a_library_with_another_embedding_model_is_refused(copy_model, tmp_path):
    repository = copy_model("spectra_search")
    copy_model("spectra_similarity", as_name="spectra_embedding")  # not the one embedded with
    with pytest.raises(ModelImageError, match="was embedded with spectra_embedding:1"):
        plan_model_image(repository, ["spectra_search", "spectra_embedding"])


def test_the_context_holds_the_files_readable_by_anyone(copy_model, tmp_path):
    repository = copy_model("penguins")
    (repository / "penguins" / "1" / "model.onnx").chmod(0o600)
    (repository / "penguins" / "1" / ".staging-left-over").write_text("not part of it")
    plan = plan_model_image(repository, ["penguins:1"])
    context = tmp_path / "context"
    context.mkdir()
    write_build_context(plan, context)
    held = sorted(p.relative_to(context).as_posix() for p in context.rglob("*") if p.is_file())
    recorded = sorted(f"models/penguins/1/{name}" for name in json.loads(plan.labels[FILES]))
    assert held == ["Dockerfile", *recorded]
    assert (context / "Dockerfile").read_text().startswith("FROM scratch\n")
    assert (context / "models/penguins/1/model.onnx").stat().st_mode & 0o777 == 0o644


def test_an_image_name_is_made_from_any_model_name(copy_model):
    repository = copy_model("penguins", as_name="My.Penguins-v2")
    plan = plan_model_image(repository, ["My.Penguins-v2"])
    assert plan.tag == "zooserve-model-my.penguins-v2:1"
    # `a..b` and `x__-y` are model names but no image names: spelt with dashes.
    for name, tag in (("a..b", "zooserve-model-a-b:1"), ("x__-y", "zooserve-model-x-y:1")):
        assert default_tag(dataclasses.replace(plan.versions[0], name=name)) == tag


@pytest.mark.parametrize(("args", "said"), [
    (["--models", "dolphins"], "no model 'dolphins'"),
    (["--models", "penguins:7"], "model 'penguins' has no version 7"),
    (["--models", "penguins:v1"], "'v1' is not a version"),
    ([], "--model-only needs --models"),
    (["--models", "penguins", "--gpu"], "--gpu is for the server image"),
    (["--models", "penguins", "--repository", "/nonexistent/models"],
     "models folder '/nonexistent/models' does not exist"),
])
def test_every_mistake_is_one_line_before_docker_runs(args, said):
    done = zooserve_image_build("--model-only", *args)
    assert done.returncode != 0
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert said in done.stderr, done.stderr


def test_repository_is_only_for_model_only_images():
    done = zooserve_image_build("--repository", str(MODELS))
    assert done.returncode != 0 and "--repository is for --model-only" in done.stderr


def test_no_docker_is_one_line_after_the_request_checks_out():
    done = zooserve_image_build("--model-only", "--models", "penguins")
    assert done.returncode != 0
    said = "zooserve image build: error: DOCKER=/nonexistent is no executable"
    assert done.stderr.strip() == said
