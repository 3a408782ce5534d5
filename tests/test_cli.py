"""The `zooserve` command as a user runs it, each in its own process."""

from __future__ import annotations

from tests.helpers.cli import zooserve
from tests.helpers.server import free_port


def test_models_lists_the_repository_with_metrics():
    result = zooserve("models")
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split()[:4] == ["NAME", "VERSION", "TASK", "METRIC"]
    penguins = next(r for r in rows if r.startswith("penguins "))
    assert "classification" in penguins and "accuracy=" in penguins


def test_models_reads_the_folder_from_the_environment(tmp_path):
    result = zooserve("models", env={"ZOOSERVE_MODELS": str(tmp_path / "nowhere")})
    assert result.returncode != 0
    assert "nowhere" in result.stderr and "does not exist" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_predict_prints_the_species(server):
    result = zooserve("predict", "penguins", "--url", server.url,
                      "--inputs", "[[39.1, 18.7, 181, 3750], [46.5, 17.9, 192, 3500]]")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1].startswith("Adelie ") and lines[2].startswith("Chinstrap ")
    assert "Gentoo=" in lines[1]


def test_predict_reports_a_server_error_in_one_line(server):
    result = zooserve("predict", "penguins", "--url", server.url, "--inputs", "[[1, 2, 3]]")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "zooserve predict: error: INVALID_ARGUMENT: input 'features': shape [1, 3] does not "
        "match [-1, 4]: axis 1 must be 4, got 3"
    ]


def test_bad_flag_is_one_line():
    result = zooserve("serve", "--grpc-port", "http")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "zooserve serve: error: --grpc-port: expected an integer, got 'http'"
    ]
    unknown = zooserve("serve", "--colour", "blue")
    assert unknown.returncode == 2
    assert len(unknown.stderr.strip().splitlines()) == 1
    assert "--colour" in unknown.stderr


def test_serve_refuses_a_missing_models_folder(tmp_path):
    result = zooserve("serve", "--models", str(tmp_path / "absent"),
                      "--grpc-port", str(free_port()))
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"zooserve serve: error: models folder '{tmp_path / 'absent'}' does not exist"
    ]
