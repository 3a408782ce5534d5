"""The device check of issue 8, item 6: one prepared script for a machine with a GPU and no
network (one NVIDIA H200 and 16 cores in mind), using only what is installed there.

1. Which execution providers ONNX Runtime offers, and which each session really uses
   (`session.get_providers()` read back after creating it).
2. The zoo's CNN (models/digits/1/model.onnx) at batch 1, 32 and 256 on CUDA (when offered)
   and on the CPU: throughput (images/s) and latency per call (p50, p99).
3. When `zooserve serve --help` lists --workers and zooserve's serving packages import:
   zooserve gRPC throughput at --workers 1, 2, 4, 8 (CPU device, penguins and digits), loaded
   by the harness's bare load generator from several client processes.

Prints a markdown table to stdout, and writes it to $OUT/gpu_check.md when $OUT is set.
Anything missing (CUDA, grpc, zooserve) is skipped with one line saying so; total well under
5 minutes (under 2 on a 2-core machine without a GPU).

    python3 benchmarks/gpu_check.py [--duration 3] [--workers 1,2,4,8] [--skip-workers]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

try:
    import numpy as np
    import onnxruntime as ort
except ImportError as exc:  # the device image decides what is there; say what is missing
    print(f"gpu_check needs numpy and onnxruntime (or onnxruntime-gpu): {exc}")
    raise SystemExit(2) from None

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CNN = ROOT / "models" / "digits" / "1" / "model.onnx"
BATCHES = (1, 32, 256)

lines: list[str] = []


def say(text: str = "") -> None:
    print(text, flush=True)
    lines.append(text)


# --- ONNX Runtime: providers and the CNN ---------------------------------------------------------

def session_for(provider: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    providers: list = ["CPUExecutionProvider"]
    if provider == "CUDAExecutionProvider":
        providers = [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]
    return ort.InferenceSession(str(CNN), options, providers=providers)


def time_calls(session: ort.InferenceSession, batch: int, duration_s: float) -> dict:
    name = session.get_inputs()[0].name
    images = np.random.default_rng(0).integers(0, 256, (batch, 28, 28, 1)).astype(np.float32)
    feed = {name: images}
    for _ in range(10 if batch < 256 else 3):  # warm-up (CUDA kernels, allocator)
        session.run(None, feed)
    times: list[float] = []
    end = time.perf_counter() + duration_s
    while time.perf_counter() < end or len(times) < 5:
        started = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - started)
    ms = np.asarray(times) * 1000
    return {"calls": len(times), "images_per_s": batch * len(times) / (ms.sum() / 1000),
            "p50_ms": float(np.median(ms)), "p99_ms": float(np.percentile(ms, 99))}


def onnxruntime_part(duration_s: float) -> None:
    available = ort.get_available_providers()
    wanted = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    if "CUDAExecutionProvider" not in available:
        say("CUDA: not offered by this onnxruntime build; CUDA rows skipped")
    elif hasattr(ort, "preload_dlls"):
        with contextlib.suppress(Exception):
            ort.preload_dlls()  # CUDA/cuDNN from pip wheels, before the first CUDA session
    if "TensorrtExecutionProvider" in available:
        say("TensorRT is offered; not measured here (engine builds take minutes)")
    rows = []
    for provider in wanted:
        try:
            session = session_for(provider)
        except Exception as exc:  # a CUDA provider that cannot start: say so, go on
            say(f"{provider}: session failed: {str(exc).splitlines()[0]}")
            continue
        used = session.get_providers()
        say(f"session asked for {provider}: get_providers() = {used}")
        if provider == "CUDAExecutionProvider" and used[0] != provider:
            say("  CUDA was asked for but the session fell back; CUDA rows skipped")
            continue
        for batch in BATCHES:
            figures = time_calls(session, batch, duration_s)
            rows.append((provider.replace("ExecutionProvider", ""), used[0], batch, figures))
    say()
    say(f"digits CNN ({CNN.relative_to(ROOT)}), {duration_s:g} s per batch size, one process")
    say()
    say("| device | session providers[0] | batch | calls | images/s | p50 ms/call | p99 ms/call |")
    say("|---|---|---:|---:|---:|---:|---:|")
    for device, used, batch, f in rows:
        say(f"| {device} | {used} | {batch} | {f['calls']} | {f['images_per_s']:,.0f} "
            f"| {f['p50_ms']:.3f} | {f['p99_ms']:.3f} |")


# --- zooserve --workers scaling --------------------------------------------------------------

def zooserve_command() -> list[str] | None:
    """How to run `zooserve` here, or None (with the reason said) when it cannot serve."""
    candidates = [[sys.executable, "-m", "zooserve"]]
    if (ROOT / ".venv/bin/zooserve").exists():
        candidates.insert(0, [str(ROOT / ".venv/bin/zooserve")])
    for command in candidates:
        out = subprocess.run([*command, "serve", "--help"], cwd=ROOT, capture_output=True,
                             text=True)
        if out.returncode == 0:
            if "--workers" not in out.stdout:
                say("zooserve serve --help lists no --workers: scaling rows skipped")
                return None
            return command
    say(f"zooserve cannot run here ({' / '.join(' '.join(c) for c in candidates)} failed: "
        f"{(out.stderr or out.stdout).strip().splitlines()[-1:]}); scaling rows skipped")
    return None


def _client(target: str, model: str, concurrency: int, connections: int, duration_s: float,
            server_pid: int) -> subprocess.Popen:
    code = ("import json, sys; sys.path.insert(0, sys.argv[1])\n"
            "from benchmarks import loadgen, payloads\n"
            "t, m, c, n, d, pid = sys.argv[2], sys.argv[3], *map(int, sys.argv[4:6]),"
            " float(sys.argv[6]), int(sys.argv[7])\n"
            "p = loadgen.grpc_unary(t, payloads.infer_request_bytes(m), c, d, 1.0, pid, n)\n"
            "print(json.dumps(p.as_dict()))\n")
    return subprocess.Popen([sys.executable, "-c", code, str(ROOT), target, model,
                             str(concurrency), str(connections), str(duration_s),
                             str(server_pid)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def workers_part(counts: list[int], duration_s: float) -> None:
    try:
        import grpc  # noqa: F401
        import grpc_health.v1.health_pb2  # noqa: F401

        from benchmarks import payloads, systems
        payloads.infer_request_bytes("penguins")
    except Exception as exc:
        say(f"the load generator cannot run here ({exc!r}); scaling rows skipped")
        return
    command = zooserve_command()
    if command is None:
        return
    cores = len(os.sched_getaffinity(0))
    clients = max(1, min(4, cores // 4))  # client processes, so the client is not the limit
    repo = Path(tempfile.mkdtemp(prefix="gpu-check-models-"))
    for model in ("penguins", "digits"):
        shutil.copytree(ROOT / "models" / model, repo / model)
    rows = []
    for workers in counts:
        port = systems.free_port()
        argv = [*command, "serve", "--models", str(repo), "--grpc-port", str(port),
                "--http-port", str(systems.free_port()), "--metrics-port", "0",
                "--device", "cpu", "--log-level", "WARNING", "--workers", str(workers)]
        log = open(repo / f"serve-{workers}.log", "w")  # closed below
        process = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        running = systems.Running(f"zooserve-w{workers}", process, Path(log.name),
                                  grpc_target=f"127.0.0.1:{port}")
        started = time.monotonic()
        try:
            systems._wait_grpc_ready(running, started, 120, health=True)
        except Exception as exc:
            say(f"--workers {workers}: did not start ({str(exc).splitlines()[0]})")
            systems.stop(running)
            log.close()
            continue
        try:
            for model, concurrency in (("penguins", 64), ("digits", 64)):
                per_client = concurrency // clients
                connections = max(1, min(per_client, 2 * workers))
                procs = [_client(running.grpc_target, model, per_client, connections,
                                 duration_s, running.pid) for _ in range(clients)]
                points = []
                for proc in procs:
                    out, err = proc.communicate(timeout=duration_s + 60)
                    if proc.returncode:
                        say(f"client failed: {err.strip().splitlines()[-1:]}")
                    else:
                        points.append(json.loads(out))
                if not points:
                    continue
                rows.append((workers, model, concurrency, running.ready_s, {
                    "throughput": sum(p["throughput"] for p in points),
                    "p50_ms": float(np.median([p["p50_ms"] for p in points])),
                    "p99_ms": max(p["p99_ms"] for p in points),
                    "errors": sum(p["errors"] for p in points),
                    "cpu": float(np.nanmean([p["server_cpu_ms"] or np.nan for p in points]))}))
        finally:
            systems.stop(running)
            log.close()
    say()
    say(f"zooserve gRPC --workers scaling, --device cpu, {cores} cores; {clients} client "
        f"processes (bare load generator), {duration_s:g} s per point after 1 s warm-up")
    say()
    say("| workers | model | concurrency | ready s | throughput /s | p50 ms | p99 ms "
        "| server CPU ms/req | errors |")
    say("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for workers, model, concurrency, ready_s, f in rows:
        say(f"| {workers} | {model} | {concurrency} | {ready_s:.1f} | {f['throughput']:,.0f} "
            f"| {f['p50_ms']:.2f} | {f['p99_ms']:.2f} | {f['cpu']:.3f} | {f['errors']} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per point [3]")
    parser.add_argument("--workers", default="1,2,4,8", help="--workers counts [1,2,4,8]")
    parser.add_argument("--skip-workers", action="store_true")
    args = parser.parse_args()
    started = time.monotonic()
    say("# gpu_check")
    say()
    say(f"onnxruntime {ort.__version__}; get_available_providers(): "
        f"{ort.get_available_providers()}")
    gpu = shutil.which("nvidia-smi")
    if gpu:
        out = subprocess.run([gpu, "-L"], capture_output=True, text=True)
        say(f"nvidia-smi -L: {out.stdout.strip() or out.stderr.strip()}")
    else:
        say("nvidia-smi: not found")
    say(f"python {sys.version.split()[0]}, {len(os.sched_getaffinity(0))} cores usable")
    onnxruntime_part(args.duration)
    if not args.skip_workers:
        workers_part([int(n) for n in args.workers.split(",")], args.duration)
    say()
    say(f"total {time.monotonic() - started:.0f} s")
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_check.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
