"""Run a docs page's steps as written, for the tests that keep the tutorials true
(test_sharing_tutorial.py, test_search_tutorial.py):

- a ```python block whose first line is `# NAME.py` is written to the file NAME.py;
- every ```sh block runs through bash, in order, in the given folder, with this environment's
  `python` and `zooserve` first on PATH; what it prints is kept under its second word (the
  script's name, or the zooserve command);
- `zooserve serve ...` runs in the background until the end, with free ports added to its
  flags. The only edits to the page's text are the ports: `localhost:8001` (in any step)
  becomes the port chosen, and a `zooserve search` step without `--url` gets `--url localhost:PORT`.
Other blocks (```text, ```json) are shown output, not steps."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from tests.helpers.server import free_port, wait_until_serving

BLOCK = re.compile(r"^```(\w+)\n(.*?)^```$", re.M | re.S)
STEP_TIMEOUT_S = 300


def blocks(page: Path) -> list[tuple[str, str]]:
    return [(kind, body) for kind, body in BLOCK.findall(page.read_text())]


def page_env() -> dict[str, str]:
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "TF_CPP_MIN_LOG_LEVEL": "3", "ZOOSERVE_DRAIN_DELAY": "0"}
    env.pop("ZOOSERVE_MODELS", None)
    return env


@contextlib.contextmanager
def run_page(page: Path, folder: Path, env: dict[str, str]) -> Iterator[tuple[int, dict]]:
    """Run the page's steps in `folder`; yields the server's port and what each step printed,
    with the server still running."""
    port = free_port()
    printed: dict[str, str] = {}
    server = None
    try:
        for kind, body in blocks(page):
            if kind == "python":
                name = body.splitlines()[0].removeprefix("# ").strip()
                assert name.endswith(".py"), f"a python block must start with '# NAME.py': {name}"
                (folder / name).write_text(body.replace("localhost:8001", f"localhost:{port}"))
            elif kind == "sh" and body.startswith("zooserve serve"):
                server = _start_server(body, folder, env, port)
            elif kind == "sh":
                body = body.replace("localhost:8001", f"localhost:{port}")
                if body.startswith("zooserve search") and "--url" not in body:
                    body = body.rstrip("\n") + f" --url localhost:{port}\n"
                done = subprocess.run(["bash", "-euo", "pipefail", "-c", body], cwd=folder,
                                      env=env, capture_output=True, text=True,
                                      timeout=STEP_TIMEOUT_S)
                assert done.returncode == 0, f"{body}\n{done.stdout}\n{done.stderr}"
                printed[body.split()[1]] = done.stdout
        assert server is not None, "the page never starts the server"
        yield port, printed
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=15)


def _start_server(command: str, folder: Path, env: dict, port: int) -> subprocess.Popen:
    ports = f" --grpc-port {port} --http-port {free_port()} --metrics-port {free_port()}"
    log_path = folder / "server.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(["bash", "-c", "exec " + command.strip() + ports],
                                   cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
    wait_until_serving(f"127.0.0.1:{port}", process, log_path)
    return process
