"""Server memory while HTTP clients declare large bodies and send almost nothing: figures,
never assertions.

    .venv/bin/python -m benchmarks.held_bodies [--connections 32] [--declared 67108864]

Starts one `zooserve serve` on the shipped zoo (as the benchmark harness starts it) for each
setting below, opens `--connections` connections that each send the headers of a penguins
infer request with `Content-Length: --declared` and one byte of body, and prints the
server's RSS before, while they are held, and what each connection was answered:

- `--max-inflight 4`, the setting of the hostile probe in issue 21 (before: 91 -> 2,140 MiB);
- the defaults (the body budget, 256 MiB, admits four 64 MiB bodies);
- a budget large enough to admit every body: only what was sent is held.

Connections still held after 1 s ("none yet") are answered 408 once the body timeout passes
(5 s here)."""

from __future__ import annotations

import argparse
import collections
import os
import socket
import tempfile
import time
from pathlib import Path

import psutil

from benchmarks import systems

SETTINGS = {
    "--max-inflight 4": {"ZOOSERVE_MAX_INFLIGHT": "4"},
    "defaults": {},
    "--http-body-buffer-bytes 4 GiB": {"ZOOSERVE_HTTP_BODY_BUFFER_BYTES": str(4 * 2**30)},
}


def _mib(value: int) -> str:
    return f"{value / 2**20:,.0f} MiB"


def hold(http_url: str, connections: int, declared: int) -> list[socket.socket]:
    host, port = http_url.removeprefix("http://").split(":")
    head = (f"POST /v2/models/penguins/infer HTTP/1.1\r\nHost: {host}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {declared}\r\n\r\n{{")
    held = []
    for _ in range(connections):
        sock = socket.create_connection((host, int(port)))
        sock.sendall(head.encode())
        held.append(sock)
    return held


def answers(held: list[socket.socket], within_s: float) -> collections.Counter:
    """The status each connection got within `within_s` seconds (`none yet` if none)."""
    got: collections.Counter = collections.Counter()
    deadline = time.monotonic() + within_s
    for sock in held:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            line = sock.recv(64).split(b"\r\n", 1)[0].decode("latin-1")
            got[line.split(" ")[1] if line else "closed"] += 1
        except TimeoutError:
            got["none yet"] += 1
    return got


def measure(label: str, env: dict[str, str], connections: int, declared: int,
            logs: Path) -> None:
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update({**env, "ZOOSERVE_HTTP_BODY_TIMEOUT": "5"})
    try:
        running = systems.SYSTEMS["zooserve"].start(logs)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        os.environ.pop("ZOOSERVE_HTTP_BODY_TIMEOUT", None)
    try:
        process = psutil.Process(running.pid)
        before = process.memory_info().rss
        held = hold(running.http_url, connections, declared)
        at_once = answers(held, 1.0)
        during = process.memory_info().rss
        print(f"{label}: RSS {_mib(before)} before, {_mib(during)} with {connections} "
              f"connections each declaring {declared:,} bytes and sending 1 "
              f"(+{(during - before) / 2**20:,.0f} MiB); answered within 1 s: "
              f"{dict(sorted(at_once.items()))}")
        for sock in held:
            sock.close()
    finally:
        systems.stop(running)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--declared", type=int, default=64 * 2**20)
    args = parser.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="zooserve-held-bodies-"))
    for label, env in SETTINGS.items():
        measure(label, env, args.connections, args.declared, logs)


if __name__ == "__main__":
    main()
