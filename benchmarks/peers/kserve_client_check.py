"""KServe's Python client and zooserve.Client in one process, against one zooserve server.

KServe's generated modules register `inference.*` in protobuf's default descriptor pool, as
tritonclient's do; zooserve's live in a pool of their own, so both import in either order.
kserve pins a web stack of its own (fastapi, pydantic) that BentoML's does not resolve with,
so the check runs in the kserve peer's venv (benchmarks/peers/venvs.py, made on first use)
with this checkout on PYTHONPATH, while the server runs from the project's venv.

    .venv/bin/python -m benchmarks.peers.kserve_client_check

Prints one line per import order and exits non-zero if either client fails or they disagree.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks import systems
from benchmarks.peers import venvs

ROOT = Path(__file__).resolve().parents[2]

# Runs in the kserve venv: argv = url, which client to import first.
BOTH_CLIENTS = """
import asyncio, sys
import numpy as np
url, first = sys.argv[1], sys.argv[2]
if first == "kserve":
    from kserve import InferenceGRPCClient, InferInput, InferRequest
    import zooserve
else:
    import zooserve
    from kserve import InferenceGRPCClient, InferInput, InferRequest
from importlib.metadata import version

rows = np.array([[39.1, 18.7, 181, 3750], [46.5, 13.5, 210, 4550]], dtype=np.float32)

async def ask_kserve():
    client = InferenceGRPCClient(url)
    tensor = InferInput("features", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    response = await client.infer(InferRequest(model_name="penguins", infer_inputs=[tensor]))
    await client.close()
    return response.outputs[0].as_numpy()

theirs = asyncio.run(ask_kserve())
with zooserve.Client(url) as client:
    ours = client.predict("penguins", rows)
same = np.allclose(theirs, ours.outputs["probabilities"], rtol=0, atol=1e-6)
print(f"{first} imported first: kserve {version('kserve')} argmax {theirs.argmax(1).tolist()}, "
      f"zooserve.Client {ours.predicted()}, same probabilities: {same}")
sys.exit(0 if same else 1)
"""


def main() -> int:
    python = venvs.ensure("kserve")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    failed = False
    # Started as the benchmark harness starts it: ready once every model answers.
    running = systems.SYSTEMS["zooserve"].start(Path(tempfile.mkdtemp(prefix="zooserve-kserve-")))
    try:
        for first in ("kserve", "zooserve"):
            done = subprocess.run([str(python), "-c", BOTH_CLIENTS, running.grpc_target, first],
                                  env=env, capture_output=True, text=True, timeout=120)
            print(done.stdout.strip() or done.stderr.strip().splitlines()[-1])
            failed |= done.returncode != 0
    finally:
        systems.stop(running)
    return 1 if failed else 0

if __name__ == "__main__":
    sys.exit(main())
