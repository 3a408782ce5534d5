"""Spectral library search at 100k and 500k entries: figures, never assertions.

    .venv/bin/python -m benchmarks.library_search                 # 100k and 500k, ~25 min
    .venv/bin/python -m benchmarks.library_search --sizes 20000 --no-write   # a quick look

For each size, in a scratch repository (~/.cache/zooserve/benchmarks/search):
1. a synthetic MGF library from the zoo's spectrum simulator (`zooserve library simulate`,
   kept between runs) and 200 noisy copies of its spectra as queries;
2. `zooserve library build`, exact and `--backend ann`, each a process of its own: wall time,
   peak RSS, bundle size, and the ANN index's recall@10 as the build measured it;
3. one `zooserve serve` with both libraries: end-to-end latency of raw-peak queries at batch 1
   and batch 64 (one client, closed loop) and throughput at 8 concurrent clients, through
   the load generator of the harness (pre-serialised requests, benchmarks/loadgen.py); the
   server's RSS (file-backed and anonymous) beside that of a server with the embedding model
   alone;
4. the all-vs-all way, in a process of its own: the library's embeddings loaded into memory,
   a dense score matrix of 64 queries against all of them, argsort per row (what a user does
   with MS2DeepScore-style `matrix` scores to get top-k): time and peak RSS. MS2DeepScore's
   `matrix` also embeds the library on every call; that time is the build's embedding time.

With --write (the default) the section between the markers in BENCHMARKS.md is replaced;
`benchmarks/run` keeps it when it rewrites the rest of the file."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from benchmarks import loadgen
from benchmarks.systems import free_port

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
CACHE = Path.home() / ".cache" / "zooserve" / "benchmarks" / "search"
BEGIN = "<!-- kept: library_search -->"
END = "<!-- /kept: library_search -->"
QUERIES = 200
SEED = 1

# The memory floor of one exact query: a single pass over the embeddings (in memory), and a
# bare matrix-vector product, in a process of its own.
FLOOR = """
import sys, time
import numpy as np
embeddings = np.load(sys.argv[1])
q = embeddings[0].copy()
def timed(work, runs=30):
    work()
    started = time.perf_counter()
    for _ in range(runs):
        work()
    return (time.perf_counter() - started) / runs
print(f"{timed(embeddings.sum)} {timed(lambda: embeddings @ q)}")
"""

DENSE = """
import resource, sys, time
import numpy as np
library, queries = sys.argv[1], sys.argv[2]
started = time.perf_counter()
embeddings = np.load(library)           # into memory, as a DataFrame of embeddings would be
loaded = time.perf_counter()
q = np.load(queries)[:64]
scores = q @ embeddings.T               # the dense [queries, library] matrix
scored = time.perf_counter()
top = np.argsort(-scores, axis=1)[:, :10]
done = time.perf_counter()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"{loaded - started} {scored - loaded} {done - scored} {peak} {scores.nbytes}")
"""


def _timed(argv: list[str], log: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one child process; its output goes to `log`."""
    started = time.perf_counter()
    with open(log, "w") as out:
        child = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
    if status != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{log.read_text()[-2000:]}")
    return time.perf_counter() - started, usage.ru_maxrss / 1024


def _size_mib(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def _rss(pid: int) -> dict[str, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


def _request(model: str, spectra, top_k: int = 10) -> bytes:
    from zooserve.protocol.generated import grpc_service_pb2 as pb
    from zooserve.spectra.binning import pad_peaks

    mz, intensity, n_peaks = pad_peaks(spectra)
    request = pb.ModelInferRequest(model_name=model)
    for name, array, datatype in (("mz", mz, "FP32"), ("intensity", intensity, "FP32"),
                                  ("n_peaks", n_peaks, "INT32")):
        request.inputs.add(name=name, datatype=datatype, shape=list(array.shape))
        request.raw_input_contents.append(array.tobytes())
    request.parameters["top_k"].int64_param = top_k
    return request.SerializeToString()


class Server:
    def __init__(self, models: Path, log: Path) -> None:
        self.port = free_port()
        self.log = log
        self.process = subprocess.Popen(
            [str(VENV_BIN / "zooserve"), "serve", "--models", str(models), "--grpc-port",
             str(self.port), "--http-port", str(free_port()), "--metrics-port", "0",
             "--log-level", "WARNING"],
            cwd=ROOT, stdout=open(log, "w"), stderr=subprocess.STDOUT)
        self.target = f"127.0.0.1:{self.port}"
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        deadline = time.monotonic() + 600
        with grpc.insecure_channel(self.target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"server exited:\n{log.read_text()[-2000:]}")
                if "could not load" in log.read_text():  # it will never be ready
                    self.stop()
                    raise RuntimeError(f"a model did not load:\n{log.read_text()[-2000:]}")
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.2)
        raise RuntimeError("server did not become ready")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


def _queries(mgf: Path):
    from zooserve.spectra.mgf import read_mgf

    return list(read_mgf(mgf))


def measure(size: int, a: argparse.Namespace) -> dict:
    from zooserve.spectra.binning import bin_padded, pad_peaks

    work = a.cache / str(size)
    work.mkdir(parents=True, exist_ok=True)
    mgf, queries_mgf = work / "library.mgf", work / "queries.mgf"
    result: dict = {"size": size}
    if not (mgf.is_file() and queries_mgf.is_file()):
        seconds, _ = _timed([str(VENV_BIN / "zooserve"), "library", "simulate", "--count",
                             str(size), "--seed", str(SEED), "--out", str(mgf), "--queries",
                             str(queries_mgf), "--query-count", str(QUERIES)],
                            work / "simulate.log")
        print(f"{size}: simulated in {seconds:.0f} s", flush=True)
    result["mgf_mib"] = mgf.stat().st_size / 2**20
    models = work / "models"
    shutil.rmtree(models, ignore_errors=True)
    models.mkdir()
    shutil.copytree(ROOT / "models" / "spectra_embedding", models / "spectra_embedding")
    for backend in ("exact", "ann"):
        log = work / f"build-{backend}.log"
        seconds, peak = _timed([str(VENV_BIN / "zooserve"), "library", "build", "--models",
                                str(models), "--spectra", str(mgf), "--name", f"lib_{backend}",
                                "--backend", backend], log)
        folder = models / f"lib_{backend}" / "1"
        manifest = json.loads((folder / "library.json").read_text())
        embedded = re.search(r"embedding: \d+ spectra in ([\d.]+) s", log.read_text())
        result[f"build_{backend}"] = {
            "seconds": seconds, "peak_rss_mib": peak, "bundle_mib": _size_mib(folder),
            "embeddings_mib": (folder / "embeddings.npy").stat().st_size / 2**20,
            "embedding_seconds": float(embedded.group(1)) if embedded else None,
            "backend": manifest["backend"]}
        print(f"{size}: built {backend} in {seconds:.0f} s", flush=True)

    queries = _queries(queries_mgf)
    originals = [q.fields["ORIGINAL"] for q in queries]
    points: dict = {}
    baseline_models = work / "baseline"
    shutil.rmtree(baseline_models, ignore_errors=True)
    baseline_models.mkdir()
    shutil.copytree(ROOT / "models" / "spectra_embedding", baseline_models / "spectra_embedding")
    baseline = Server(baseline_models, work / "baseline.log")
    result["baseline_rss"] = _rss(baseline.process.pid)
    baseline.stop()

    result["loaded_rss"], result["served_rss"], result["top1"] = {}, {}, {}
    for backend in ("exact", "ann"):
        # One library per server, so each one's memory is its own.
        alone = work / f"serve-{backend}"
        shutil.rmtree(alone, ignore_errors=True)
        alone.mkdir()
        # Hard links, not symbolic ones: the server follows no link out of its repository.
        shutil.copytree(models / "spectra_embedding", alone / "spectra_embedding",
                        copy_function=os.link)
        model = f"lib_{backend}"
        shutil.copytree(models / model, alone / model, copy_function=os.link)
        server = Server(alone, work / f"serve-{backend}.log")
        try:
            result["loaded_rss"][backend] = _rss(server.process.pid)
            result["top1"][backend] = _top1(server.target, model, queries, originals)
            one = _request(model, queries[:1])
            batch = _request(model, queries[:64])
            for name, payload, concurrency in (("b1_c1", one, 1), ("b64_c1", batch, 1),
                                               ("b1_c8", one, 8)):
                point = loadgen.grpc_unary(server.target, payload, concurrency, a.duration,
                                           a.warmup, server.process.pid)
                if point.errors:
                    raise RuntimeError(f"{model} {name}: {point.first_error}")
                points[f"{backend}_{name}"] = point.__dict__
                print(f"{size} {backend} {name}: p50 {point.p50_ms:.2f} ms, "
                      f"{point.throughput:.0f}/s", flush=True)
            result["served_rss"][backend] = _rss(server.process.pid)
        finally:
            server.stop()
    result["points"] = points

    embeddings = models / "lib_exact" / "1" / "embeddings.npy"
    raw = bin_padded(*pad_peaks(queries))
    import onnxruntime as ort

    session = ort.InferenceSession(str(models / "spectra_embedding" / "1" / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    embedded = session.run(None, {"spectrum": raw})[0]
    embedded /= np.linalg.norm(embedded, axis=1, keepdims=True)
    np.save(work / "queries.npy", embedded.astype(np.float32))
    out = subprocess.run([sys.executable, "-c", DENSE, str(embeddings),
                          str(work / "queries.npy")], capture_output=True, text=True,
                         check=True).stdout.split()
    load_s, score_s, sort_s, peak, matrix_bytes = map(float, out)
    result["dense"] = {"load_s": load_s, "score_s": score_s, "argsort_s": sort_s,
                       "peak_rss_mib": peak, "matrix_mib": matrix_bytes / 2**20, "queries": 64}
    out = subprocess.run([sys.executable, "-c", FLOOR, str(embeddings)], capture_output=True,
                         text=True, check=True).stdout.split()
    result["floor"] = {"read_ms": float(out[0]) * 1000, "matvec_ms": float(out[1]) * 1000}
    shutil.rmtree(models / "lib_ann", ignore_errors=True)
    return result


def _top1(target: str, model: str, queries, originals) -> float:
    """The share of noisy copies whose top match is their original."""
    import grpc

    from zooserve.protocol.generated import grpc_service_pb2 as pb

    hits = 0
    with grpc.insecure_channel(target) as channel:
        infer = channel.unary_unary(loadgen.INFER)
        for start in range(0, len(queries), 50):
            part = queries[start:start + 50]
            reply = pb.ModelInferResponse.FromString(infer(_request(model, part, 1),
                                                           timeout=60))
            names = [o.name for o in reply.outputs]
            ids = _bytes_elements(reply.raw_output_contents[names.index("ids")])
            hits += sum(i == o for i, o in zip(ids, originals[start:start + 50], strict=True))
    return hits / len(queries)


def _bytes_elements(raw: bytes) -> list[str]:
    """BYTES tensor contents: each element a 4-byte little-endian length, then its bytes."""
    items, offset = [], 0
    while offset < len(raw):
        length = int.from_bytes(raw[offset:offset + 4], "little")
        items.append(raw[offset + 4:offset + 4 + length].decode())
        offset += 4 + length
    return items


def markdown(results: list[dict], command: str) -> str:
    lines = [
        BEGIN,
        "## Spectral library search (issue 12)",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on this machine ({os.cpu_count()} "
        f"cores) with `{command}`. Libraries are synthetic (`zooserve library simulate`, seed "
        f"{SEED}); queries are {QUERIES} noisy copies of library spectra, sent as raw peaks "
        "(binned and embedded by the server), top 10. Latency is end to end through gRPC "
        "(the harness's closed-loop load generator, pre-serialised requests).",
        "",
        "### Build (`zooserve library build`, a process of its own)",
        "",
        "| entries | backend | build s | of which reading, binning, embedding s | peak RSS MiB | "
        "bundle MiB | "
        "embeddings MiB | ANN recall@10 |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        for backend in ("exact", "ann"):
            b = r[f"build_{backend}"]
            recall = b["backend"].get("recall_at_10", "-")
            lines.append(f"| {r['size']:,} | {backend} | {b['seconds']:.0f} | "
                         f"{b['embedding_seconds'] or 0:.0f} | {b['peak_rss_mib']:.0f} | "
                         f"{b['bundle_mib']:.0f} | {b['embeddings_mib']:.0f} | {recall} |")
    lines += [
        "",
        "### Served search",
        "",
        "| entries | backend | batch 1: p50 / p99 ms | batch 64: p50 ms per request (per "
        "query) | 8 clients, batch 1: queries/s, p50 ms | noisy copy top-1 |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for r in results:
        for backend in ("exact", "ann"):
            p = r["points"]
            one, batch, eight = (p[f"{backend}_b1_c1"], p[f"{backend}_b64_c1"],
                                 p[f"{backend}_b1_c8"])
            lines.append(
                f"| {r['size']:,} | {backend} | {one['p50_ms']:.2f} / {one['p99_ms']:.2f} | "
                f"{batch['p50_ms']:.1f} ({batch['p50_ms'] / 64:.2f}) | "
                f"{eight['throughput']:.0f}, {eight['p50_ms']:.1f} | "
                f"{r['top1'][backend]:.3f} |")
    lines += [
        "",
        "The floor under one exact query is reading the embeddings once: in-process, with the "
        "file already in memory, a single pass (`sum`) and a bare matrix-vector product take:",
        "",
        "| entries | one pass over the embeddings, ms | embeddings @ query, ms |",
        "|---:|---:|---:|",
    ]
    for r in results:
        lines.append(f"| {r['size']:,} | {r['floor']['read_ms']:.2f} | "
                     f"{r['floor']['matvec_ms']:.2f} |")
    lines += [
        "",
        "### Memory",
        "",
        "Server RSS (MiB) with one library loaded (a server per backend), after the load "
        "above, against a server with the embedding model alone. The embeddings file is "
        "mapped, so its pages count as file-backed RSS once a search has read them; faiss "
        "keeps its own copy of the vectors and its graph in anonymous memory.",
        "",
        "| entries | backend | embeddings file | server alone | library loaded | after the "
        "load (file-backed / anonymous) | added by the library | added ÷ embeddings file |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        emb = r["build_exact"]["embeddings_mib"]
        base = r["baseline_rss"]
        for backend in ("exact", "ann"):
            loaded, served = r["loaded_rss"][backend], r["served_rss"][backend]
            added = served["VmRSS"] - base["VmRSS"]
            lines.append(
                f"| {r['size']:,} | {backend} | {emb:.0f} | {base['VmRSS']:.0f} | "
                f"{loaded['VmRSS']:.0f} | {served['VmRSS']:.0f} ({served['RssFile']:.0f} / "
                f"{served['RssAnon']:.0f}) | {added:.0f} | {added / emb:.2f} |")
    lines += [
        "",
        "### The all-vs-all way, on the same data",
        "",
        "The library's embeddings loaded into memory, a dense score matrix of 64 queries × "
        "every entry, `argsort` per row for the top 10 (a process of its own). MS2DeepScore's "
        "`matrix` also embeds every library spectrum on each call: the build's embedding "
        "time above.",
        "",
        "| entries | load s | dense scores s | argsort s | per query ms | score matrix MiB | "
        "peak RSS MiB |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        d = r["dense"]
        per_query = (d["score_s"] + d["argsort_s"]) / d["queries"] * 1000
        lines.append(f"| {r['size']:,} | {d['load_s']:.2f} | {d['score_s']:.2f} | "
                     f"{d['argsort_s']:.2f} | {per_query:.1f} | {d['matrix_mib']:.0f} | "
                     f"{d['peak_rss_mib']:.0f} |")
    lines += ["", END, ""]
    return "\n".join(lines)


def write_section(text: str, path: Path) -> None:
    current = path.read_text() if path.exists() else ""
    if BEGIN in current and END in current:
        before, rest = current.split(BEGIN, 1)
        after = rest.split(END, 1)[1].lstrip("\n")
        current = before + text + after
    else:
        current = current.rstrip("\n") + "\n\n" + text
    path.write_text(current)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,500000")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per point [5]")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--cache", type=Path, default=CACHE,
                        help=f"where the libraries are simulated and built [{CACHE}]")
    a = parser.parse_args()
    results = [measure(int(size), a) for size in a.sizes.split(",")]
    command = "python -m benchmarks.library_search " + " ".join(sys.argv[1:])
    text = markdown(results, command.strip())
    print(text)
    (a.cache / "last-run.json").write_text(json.dumps(results, indent=2, default=str))
    if not a.no_write:
        write_section(text, a.output)
        print(f"wrote the section into {a.output}")


if __name__ == "__main__":
    main()
