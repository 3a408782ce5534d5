"""Requests in the binary tensor data extension of the KServe v2 REST paths, built by hand
(a JSON header, its length in a header, the raw bytes after it), and the good one a test
sends to see that the server still answers."""

from __future__ import annotations

import json

import httpx
import numpy as np

HEADER = "Inference-Header-Content-Length"


def features(rows: int = 1) -> np.ndarray:
    """`rows` copies of one Adelie's measurements."""
    return np.tile(np.array([[39.1, 18.7, 181, 3750]], np.float32), (rows, 1))


def binary_request(header: dict, binary: bytes, length: int | str | None = "auto",
                   extra: bytes = b"") -> tuple[bytes, dict[str, str]]:
    text = json.dumps(header).encode()
    headers = {"Content-Type": "application/octet-stream"}
    if length == "auto":
        headers[HEADER] = str(len(text))
    elif length is not None:
        headers[HEADER] = str(length)
    return text + binary + extra, headers


def tensor(size, name="features", shape=(1, 4), datatype="FP32", **more) -> dict:
    """One input of the JSON header; `size` is its binary_data_size (None: no parameters)."""
    made = {"name": name, "datatype": datatype, "shape": list(shape)}
    if size is not None:
        made["parameters"] = {"binary_data_size": size}
    made.update(more)
    return made


RAW = features().tobytes()  # 16 bytes


def assert_still_serving(http: httpx.Client) -> None:
    body, headers = binary_request(
        {"inputs": [tensor(16)], "parameters": {"binary_data_output": True}}, RAW)
    good = http.post("/v2/models/penguins/infer", content=body, headers=headers)
    assert good.status_code == 200, good.text
    length = int(good.headers[HEADER])
    (output,) = json.loads(good.content[:length])["outputs"]
    probabilities = np.frombuffer(good.content[length:], np.float32)
    assert output["parameters"]["binary_data_size"] == 12 and probabilities.argmax() == 0
