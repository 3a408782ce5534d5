"""The per-model queue against a real server and tritonclient: concurrent requests run as
one batch and each gets its own rows back; ModelConfig reports the batcher; a full queue
answers RESOURCE_EXHAUSTED and the server keeps serving; a request whose deadline passes in
the queue is not run; streaming answers many requests on one stream, errors included; the
statistics add up to each request's time. No timing is asserted: the waits below only make
batches form (a long max_queue_delay_us gives concurrent requests time to queue together)."""

from __future__ import annotations

import asyncio
import json
import queue
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from tritonclient.utils import InferenceServerException

from tests.helpers.server import run_server
from zooserve.serving.cpus import detect_cpu_limit

DIGITS_SHAPE = (28, 28, 1)


def _serving(repo: Path, name: str, config: dict) -> None:
    (repo / name / "serving.json").write_text(json.dumps(config))


def _images(count: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 255, size=(count, *DIGITS_SHAPE)).astype(np.float32)


def _digits_input(rows: np.ndarray, client_module=grpcclient):
    tensor = client_module.InferInput("image", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    return tensor


async def _infer_all(url: str, images: np.ndarray, timeout: float | None = None) -> list:
    """One request per image, all at once; each answer or the exception it raised."""
    client = aioclient.InferenceServerClient(url)
    try:
        calls = [
            client.infer("digits", [_digits_input(images[i : i + 1], aioclient)],
                         client_timeout=timeout)
            for i in range(len(images))
        ]
        return await asyncio.gather(*calls, return_exceptions=True)
    finally:
        await client.close()


def _statistics(client, name: str):
    (stats,) = client.get_inference_statistics(name).model_stats
    return stats


def test_concurrent_requests_run_as_one_batch_and_each_gets_its_rows(tmp_path, copy_model):
    repo = copy_model("digits")
    _serving(repo, "digits", {"dynamic_batching": {
        "max_queue_delay_us": 2_000_000, "preferred_batch_sizes": [8]}})
    images = _images(8)
    with run_server(repo, tmp_path) as server:
        client = grpcclient.InferenceServerClient(server.url)
        alone = client.infer("digits", [_digits_input(images)]).as_numpy("probabilities")
        before = _statistics(client, "digits")
        answers = asyncio.run(_infer_all(server.url, images))
        after = _statistics(client, "digits")
        config = client.get_model_config("digits").config
        client.close()
    for index, answer in enumerate(answers):
        assert not isinstance(answer, Exception), answer
        np.testing.assert_allclose(answer.as_numpy("probabilities")[0], alone[index],
                                   rtol=1e-5, atol=1e-6)
    # Eight requests of one row: the preferred batch of 8 formed, so fewer runs than requests.
    runs = after.execution_count - before.execution_count
    assert after.inference_count - before.inference_count == 8
    assert 1 <= runs < 8
    assert any(b.batch_size > 1 for b in after.batch_stats)
    assert config.dynamic_batching.preferred_batch_size == [8]
    assert config.dynamic_batching.max_queue_delay_microseconds == 2_000_000
    assert config.dynamic_batching.default_queue_policy.max_queue_size == 256
    assert config.max_batch_size == 1024


def test_statistics_add_up_to_each_request_in_the_server(server, triton):
    before = _statistics(triton, "penguins").inference_stats
    features = grpcclient.InferInput("features", [2, 4], "FP32")
    features.set_data_from_numpy(np.ones((2, 4), dtype=np.float32))
    for _ in range(3):
        triton.infer("penguins", [features])
    after = _statistics(triton, "penguins").inference_stats
    parts = ("queue", "compute_input", "compute_infer", "compute_output")
    added = {part: getattr(after, part).ns - getattr(before, part).ns for part in parts}
    assert after.success.count - before.success.count == 3
    assert sum(added.values()) == after.success.ns - before.success.ns
    # Decoding is part of compute_input and encoding of compute_output, as in Triton.
    assert added["compute_input"] > 0 and added["compute_output"] > 0


def test_a_full_queue_refuses_with_resource_exhausted_and_the_server_keeps_serving(
    tmp_path, copy_model
):
    repo = copy_model("digits")
    # One request may wait; the delay holds it there while the others arrive.
    _serving(repo, "digits", {"max_queue_size": 1,
                              "dynamic_batching": {"max_queue_delay_us": 1_000_000}})
    with run_server(repo, tmp_path) as server:
        answers = asyncio.run(_infer_all(server.url, _images(6)))
        client = grpcclient.InferenceServerClient(server.url)
        later = client.infer("digits", [_digits_input(_images(1))])
        stats = _statistics(client, "digits")
        client.close()
    refused = [a for a in answers if isinstance(a, InferenceServerException)]
    served = [a for a in answers if not isinstance(a, Exception)]
    assert refused and served, answers
    assert all(a.status() == "StatusCode.RESOURCE_EXHAUSTED" for a in refused), refused
    assert "max_queue_size" in refused[0].message()
    assert later.as_numpy("probabilities").shape == (1, 10)
    assert stats.inference_stats.fail.count == len(refused)


def test_a_request_whose_deadline_passes_in_the_queue_is_not_run(tmp_path, copy_model):
    repo = copy_model("digits")
    _serving(repo, "digits", {"dynamic_batching": {"max_queue_delay_us": 3_000_000}})
    with run_server(repo, tmp_path) as server:
        (answer,) = asyncio.run(_infer_all(server.url, _images(1), timeout=0.3))
        client = grpcclient.InferenceServerClient(server.url)
        # Queued behind the expired request, two rows are answered once the queue is taken:
        # by then the expired one has been run or dropped, and the counts say which.
        later = client.infer("digits", [_digits_input(_images(2))], client_timeout=60)
        stats = _statistics(client, "digits")
        client.close()
    assert isinstance(answer, InferenceServerException)
    assert answer.status() == "StatusCode.DEADLINE_EXCEEDED"
    assert later.as_numpy("probabilities").shape == (2, 10)
    assert stats.execution_count == 1 and stats.inference_count == 2


def test_streaming_answers_every_request_on_one_stream_and_an_error_in_place(server):
    answers: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(server.url)
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    rows = np.arange(40, dtype=np.float32).reshape(10, 4)
    try:
        for index in range(10):
            features = grpcclient.InferInput("features", [1, 4], "FP32")
            features.set_data_from_numpy(rows[index : index + 1])
            client.async_stream_infer("penguins", [features], request_id=str(index))
        wrong = grpcclient.InferInput("features", [1, 3], "FP32")
        wrong.set_data_from_numpy(np.ones((1, 3), dtype=np.float32))
        client.async_stream_infer("penguins", [wrong], request_id="wrong")
        client.async_stream_infer("penguins", [features], request_id="after")
        got = [answers.get(timeout=30) for _ in range(12)]
    finally:
        client.stop_stream()
    alone = client.infer("penguins", [_penguin_input(rows)]).as_numpy("probabilities")
    client.close()
    by_id = {}
    for result, error in got:
        if error is not None:
            by_id.setdefault("errors", []).append(error)
        else:
            by_id[result.get_response().id] = result.as_numpy("probabilities")
    for index in range(10):
        np.testing.assert_allclose(by_id[str(index)][0], alone[index], rtol=1e-5, atol=1e-6)
    assert "after" in by_id  # the stream went on after the error
    (error,) = by_id["errors"]
    assert "axis 1 must be 4" in error.message()


def _penguin_input(rows: np.ndarray):
    tensor = grpcclient.InferInput("features", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    return tensor


@pytest.mark.parametrize("config, reason", [
    ({"max_queue_size": 0}, "max_queue_size must be a whole number from 1"),
    ({"dynamic_batching": {"max_queue_delay": 5}}, "unknown key 'max_queue_delay'"),
    ({"execution": "gpu"}, "execution must be one of auto, inline, thread"),
])
def test_an_unusable_serving_file_keeps_only_its_model_from_loading(
    tmp_path, copy_model, config, reason
):
    repo = copy_model("digits")
    copy_model("penguins", repo=repo)
    _serving(repo, "digits", config)
    with run_server(repo, tmp_path) as server:
        client = grpcclient.InferenceServerClient(server.url)
        index = {m.name: m for m in client.get_model_repository_index().models}
        penguins = client.infer("penguins", [_penguin_input(np.ones((1, 4), np.float32))])
        client.close()
    assert index["digits"].state == "UNAVAILABLE"
    assert "serving.json" in index["digits"].reason and reason in index["digits"].reason
    assert penguins.as_numpy("probabilities").shape == (1, 3)


def test_serving_file_sets_threads_and_execution_and_config_reports_them(tmp_path, copy_model):
    repo = copy_model("penguins")
    copy_model("digits", repo=repo)
    _serving(repo, "penguins", {"intra_op_threads": 2, "execution": "thread", "instances": 2})
    with run_server(repo, tmp_path, "--ort-threads", "1") as server:
        client = grpcclient.InferenceServerClient(server.url)
        penguins = client.get_model_config("penguins").config
        digits = client.get_model_config("digits").config
        client.close()
    assert penguins.parameters["intra_op_thread_count"].string_value == "2"
    assert penguins.parameters["execution"].string_value == "thread"
    assert penguins.instance_group[0].count == 2
    assert digits.parameters["intra_op_thread_count"].string_value == "1"
    # Without a file: the warm-up timed it. A CNN run is dearer than a hand-off, which pays
    # only where a core is left for the run beside the event loop (4 or more).
    expected = "thread" if detect_cpu_limit().cores >= 4 else "inline"
    assert digits.parameters["execution"].string_value == expected
