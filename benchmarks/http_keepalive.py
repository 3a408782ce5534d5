"""Sequential requests over one kept-alive HTTP connection: figures, never assertions.

    .venv/bin/python -m benchmarks.http_keepalive [--requests 2000] [--rounds 3]

Starts one `zooserve serve` on the shipped zoo (as the benchmark harness starts it) and sends
penguins infer requests one after another on a single connection, each request written in one
piece with TCP_NODELAY on the client, so that only the server decides how its answer leaves.
Printed per round: microseconds per request. A server whose connections lack TCP_NODELAY
sends an answer's head and body as two segments and the body waits for the client's delayed
ACK: about 40 ms per request after the connection's first."""

from __future__ import annotations

import argparse
import json
import socket
import tempfile
import time
from pathlib import Path

from benchmarks import systems

BODY = json.dumps({"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 4],
                               "data": [39.1, 18.7, 181, 3750]}]}).encode()


def one_request(sock: socket.socket, request: bytes) -> None:
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, rest = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(rest) < length:
        rest += sock.recv(65536)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    running = systems.SYSTEMS["zooserve"].start(Path(tempfile.mkdtemp(prefix="zooserve-ka-")))
    try:
        host, port = running.http_url.removeprefix("http://").split(":")
        request = (f"POST /v2/models/penguins/infer HTTP/1.1\r\nHost: {host}\r\n"
                   f"Content-Type: application/json\r\nContent-Length: {len(BODY)}\r\n\r\n"
                   ).encode() + BODY
        with socket.create_connection((host, int(port))) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for _ in range(20):
                one_request(sock, request)
            for round_number in range(1, args.rounds + 1):
                started = time.perf_counter()
                for _ in range(args.requests):
                    one_request(sock, request)
                each = (time.perf_counter() - started) / args.requests
                print(f"round {round_number}: {args.requests} penguins requests on one "
                      f"kept-alive connection, {each * 1e6:,.0f} us per request")
    finally:
        systems.stop(running)


if __name__ == "__main__":
    main()
