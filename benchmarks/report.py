"""BENCHMARKS.md from one run: machine, versions, load, commands, targets, tables."""

from __future__ import annotations

import importlib.metadata as metadata
import os
import platform
import re
import shlex
import subprocess
from pathlib import Path

from benchmarks import systems
from benchmarks.peers import venvs
from benchmarks.run_record import HEADLINE, PERF_ANALYZER, ROOT, ROW_LABELS, Run, median_range

MAIN_PACKAGES = ["onnxruntime", "grpcio", "protobuf", "numpy", "bentoml", "tritonclient",
                 "aiohttp"]
MODEL_NOTES = {
    "penguins": "`penguins`, `features` FP32 [1,4] (tiny: overhead-bound)",
    "digits": "`digits`, `image` FP32 [1,28,28,1] (the CNN: compute-bound)",
}
PEER_PACKAGES = {
    "triton": ["nvidia-pytriton", "onnxruntime", "numpy", "protobuf", "pyzmq"],
    "kserve": ["kserve", "onnxruntime", "numpy", "grpcio", "protobuf", "uvicorn", "fastapi"],
    "mlserver": ["mlserver", "onnxruntime", "numpy", "grpcio", "protobuf", "uvloop", "uvicorn"],
}


# --- machine and versions ----------------------------------------------------------------------

def machine() -> dict[str, str]:
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
    return {"cores": f"{os.cpu_count()} (affinity {len(os.sched_getaffinity(0))})",
            "cpu": model, "memory": f"{mem_kb / 2**20:.1f} GiB",
            "kernel": platform.release(), "python": platform.python_version()}


def _git(*args: str) -> str:
    out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
    return out.stdout.strip()


def versions(servers: list[systems.System]) -> dict[str, dict[str, str]]:
    found: dict[str, dict[str, str]] = {}
    commit = _git("rev-parse", "--short", "HEAD")
    dirty = ", with uncommitted changes" if _git("status", "--porcelain",
                                                  "zooserve") else ""
    main = {"zooserve": f"{metadata.version('zooserve')} (git {commit}{dirty})",
            "python": platform.python_version()}
    for name in MAIN_PACKAGES:
        try:
            main[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            main[name] = "-"
    found["project .venv"] = main
    for peer in sorted({s.peer for s in servers if s.peer}):
        if venvs.is_ready(peer):
            try:
                found[f"{peer} venv"] = venvs.installed_versions(peer, PEER_PACKAGES[peer])
            except subprocess.CalledProcessError as exc:
                found[f"{peer} venv"] = {"?": f"could not read versions: {exc}"}
    if PERF_ANALYZER.exists():
        out = subprocess.run([str(PERF_ANALYZER), "--version"], capture_output=True, text=True)
        line = (out.stdout or out.stderr).strip().splitlines()
        found["perf_analyzer"] = {str(PERF_ANALYZER): line[0] if line else "?"}
    return found


# --- figures -----------------------------------------------------------------------------------

def _fmt(value: float | None, digits: int = 2, thousands: bool = False) -> str:
    if value is None or value != value:
        return "-"
    return f"{value:,.0f}" if thousands else f"{value:.{digits}f}"


def _cell(values: list[float | None], digits: int = 2, thousands: bool = False) -> str:
    med, lo, hi = median_range([v for v in values if v is not None])
    if med != med:
        return "-"
    if len([v for v in values if v is not None]) == 1 or lo == hi:
        return _fmt(med, digits, thousands)
    return f"{_fmt(med, digits, thousands)} ({_fmt(lo, digits, thousands)}-" \
           f"{_fmt(hi, digits, thousands)})"


def _select(run: Run, **want) -> list[dict]:
    return [p for p in run.points if all(p[k] == v for k, v in want.items())]


def _rows(run: Run, client: str) -> list[tuple[str, str]]:
    """(system, mode) pairs present for this client, in the table's order."""
    present = {(p["system"], p["mode"]) for p in run.points if p["client"] == client}
    return [key for key in ROW_LABELS if key in present]


def results_table(run: Run, model: str, client: str) -> list[str]:
    lines = ["| system | c | throughput /s | p50 ms | p99 ms | server CPU ms/req | errors "
             "| other load, cores |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    rows = _rows(run, client)
    for c in run.args.concurrency:
        for system, mode in rows:
            every = _select(run, system=system, mode=mode, client=client, model=model, c=c)
            if not every:
                continue
            points = [p for p in every if p["requests"]]  # a round with no answer: errors only
            failed = len(every) - len(points)
            errors = sum(p["errors"] for p in every)
            lines.append(
                f"| {ROW_LABELS[(system, mode)]} | {c} "
                f"| {_cell([p['throughput'] for p in points], thousands=True)} "
                f"| {_cell([p['p50_ms'] for p in points])} "
                f"| {_cell([p['p99_ms'] for p in points])} "
                f"| {_cell([p['server_cpu_ms'] for p in points], 3)} "
                f"| {errors}{f' ({failed} round(s) with no answer)' if failed else ''} "
                f"| {_cell([p.get('other_cpu_cores') for p in points], 1)} |")
    return lines if len(lines) > 2 else []


def floor_table(run: Run) -> list[str]:
    if not run.floors:
        return []
    lines = ["| model | run | ORT intra-op threads | rows/s | p50 ms per call |",
             "|---|---|---:|---:|---:|"]
    for model in run.args.models:
        keys = sorted({k for f in run.floors for k in f["models"].get(model, {})})
        for key in keys:
            figs = [f["models"][model][key] for f in run.floors
                    if key in f["models"].get(model, {})]
            what = "batch 1, sequential" if key == "b1" else "batch 32, back to back"
            lines.append(f"| {model} | {what} | {figs[0]['threads']} "
                         f"| {_cell([x['throughput'] for x in figs], thousands=True)} "
                         f"| {_cell([x['p50_ms'] for x in figs], 3)} |")
    return lines


def _floor_b32(run: Run, model: str, round_no: int) -> float | None:
    for f in run.floors:
        if f["round"] == round_no and model in f["models"]:
            return max(v["throughput"] for k, v in f["models"][model].items()
                       if k.startswith("b32"))
    return None


def _value(run: Run, system: str, mode: str, model: str, c: int, key: str,
           round_no: int) -> float | None:
    for p in _select(run, system=system, mode=mode, client="loadgen", model=model, c=c,
                     round=round_no):
        return p[key] if p["requests"] else None  # no answers: no figure, not a zero
    return None


def _ratios(run: Run, num, den) -> list[float]:
    """num and den: functions of the round number giving a figure or None."""
    out = []
    for r in range(run.args.rounds):
        a, b = num(r), den(r)
        if a is not None and b not in (None, 0) and a == a and b == b:
            out.append(a / b)
    return out


def client_cpu(run: Run) -> str:
    """The load generators' own CPU per request, median over all their points."""
    parts = []
    for client, mode, what in (("loadgen", "unary", "the gRPC load generator"),
                               ("loadgen", "stream", "streaming"),
                               ("loadgen", "http", "the HTTP one"),
                               ("tritonclient", "unary", "tritonclient.grpc.aio")):
        values = [p["client_cpu_ms"] for p in run.points
                  if p["client"] == client and p["mode"] == mode]
        if values:
            parts.append(f"{what} {median_range(values)[0]:.2f} ms")
    return ("client CPU per request (median over points): " + ", ".join(parts)) if parts \
        else "no client figures"


def targets(run: Run) -> list[str]:
    zoo = lambda model, c, key, mode="unary": (  # noqa: E731
        lambda r: _value(run, "zooserve", mode, model, c, key, r))
    of = lambda system, model, c, key: (lambda r: _value(run, system, "unary", model, c, key, r))  # noqa: E731
    checks = [
        ("penguins c=8 throughput vs bare grpc.aio server", ">=", 0.95,
         _ratios(run, zoo("penguins", 8, "throughput"), of("bare", "penguins", 8, "throughput"))),
        ("penguins c=8 server CPU/request vs bare server", "<=", 1.1,
         _ratios(run, zoo("penguins", 8, "server_cpu_ms"),
                 of("bare", "penguins", 8, "server_cpu_ms"))),
        ("penguins c=8 throughput vs KServe", ">=", 1.5,
         _ratios(run, zoo("penguins", 8, "throughput"),
                 of("kserve", "penguins", 8, "throughput"))),
        ("penguins c=8 throughput vs MLServer", ">=", 3.0,
         _ratios(run, zoo("penguins", 8, "throughput"),
                 of("mlserver", "penguins", 8, "throughput"))),
        ("penguins c=1 p50 vs bare server", "<=", 1.1,
         _ratios(run, zoo("penguins", 1, "p50_ms"), of("bare", "penguins", 1, "p50_ms"))),
        ("digits c=32 throughput vs raw ORT batch-32 in-process", ">=", 0.7,
         _ratios(run, zoo("digits", 32, "throughput"), lambda r: _floor_b32(run, "digits", r))),
        ("digits c=32 throughput vs Triton, dynamic batching", ">=", 1.5,
         _ratios(run, zoo("digits", 32, "throughput"),
                 of("triton-batch", "digits", 32, "throughput"))),
        ("digits c=32 p99 vs Triton's, dynamic batching", "<", 1.0,
         _ratios(run, zoo("digits", 32, "p99_ms"), of("triton-batch", "digits", 32, "p99_ms"))),
        ("penguins c=8 streaming server CPU/request vs unary", "<=", 0.6,
         _ratios(run, zoo("penguins", 8, "server_cpu_ms", "stream"),
                 zoo("penguins", 8, "server_cpu_ms"))),
    ]
    lines = ["| target | measured (median, range over rounds) | goal | verdict |",
             "|---|---:|---:|---|"]
    for name, op, goal, ratios in checks:
        lines.append(f"| {name} | {_ratio_cell(ratios)} | {op} {goal:g}× | "
                     f"{_verdict(ratios, op, goal)} |")
    serving = [s["serving_s"] for s in run.starts
               if s["system"] == "zooserve" and s["serving_s"] is not None]
    lines.append(f"| zooserve start to SERVING, whole zoo | {_cell(serving)} s | < 1 s | "
                 f"{_verdict(serving, '<', 1.0, unit=' s')} |")
    size = [run.install["serving_mb"]] if run.install else []
    lines.append(f"| serving install (`pip install .[serve]`, site-packages without pip) "
                 f"| {_cell(size, 0)} MB | < 250 MB | {_verdict(size, '<', 250, unit=' MB')} |")
    return lines


def _ratio_cell(ratios: list[float]) -> str:
    if not ratios:
        return "not measured"
    med, lo, hi = median_range(ratios)
    return f"{med:.2f}×" + (f" ({lo:.2f}-{hi:.2f})" if len(ratios) > 1 else "")


def _verdict(values: list[float], op: str, goal: float, unit: str = "×") -> str:
    if not values:
        return "not measured"
    med = median_range(values)[0]
    met = {">=": med >= goal, "<=": med <= goal, "<": med < goal}[op]
    if met:
        return "**met**"
    if op == ">=":
        return f"missed: {med:.2f}{unit} is {100 * (1 - med / goal):.0f}% short of {goal:g}{unit}"
    return f"missed: {med:.2f}{unit} is {100 * (med / goal - 1):.0f}% over {goal:g}{unit}"


def starts_table(run: Run) -> list[str]:
    keys = [k for k in systems.SYSTEMS if any(s["system"] == k for s in run.starts)]
    if not keys:
        return []
    lines = ["| system | process start to every model answering, s | to gRPC health SERVING, s |",
             "|---|---:|---:|"]
    for key in keys:
        starts = [s for s in run.starts if s["system"] == key]
        lines.append(f"| {systems.SYSTEMS[key].label} | {_cell([s['ready_s'] for s in starts])} "
                     f"| {_cell([s['serving_s'] for s in starts])} |")
    return lines


def perf_table(run: Run) -> list[str]:
    if not run.perf_analyzer:
        return []
    lines = ["| model | c | mode | throughput /s | p50 ms | p99 ms | network+server send/recv "
             "| server queue | compute input | compute infer | compute output (ms, averages) |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in run.perf_analyzer:
        mode = "stream" if row["stream"] else "unary"
        if "error" in row:
            lines.append(f"| {row['model']} | {row['c']} | {mode} | {row['error']} "
                         "| | | | | | | |")
            continue
        lines.append(
            f"| {row['model']} | {row['c']} | {mode} | {row['throughput']:,.0f} "
            f"| {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {row['network_ms']:.3f} "
            f"| {row['server_queue_ms']:.3f} | {row['server_input_ms']:.3f} "
            f"| {row['server_infer_ms']:.3f} | {row['server_output_ms']:.3f} |")
    return lines


# --- the document ------------------------------------------------------------------------------

def markdown(run: Run, elapsed_s: float) -> str:
    a = run.args
    when = _git("log", "-1", "--format=%cd", "--date=short") or "?"
    command = "benchmarks/run" + "".join(f" {shlex.quote(x)}" for x in a.argv)
    out = [
        "# Benchmarks",
        "",
        f"Written by `{command}` in {elapsed_s / 60:.1f} minutes (commit of {when}). "
        "Figures, never assertions; on a shared machine the ratios between rows of one run "
        "count, not the absolute numbers. Repeat with the commands below; every figure here "
        "comes from that one run.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in machine().items()],
        "",
        "## Versions",
        "",
        "| where | package | version |",
        "|---|---|---|",
    ]
    for where, packages in run.versions.items():
        if where == "_server":
            for name, version in packages.items():
                out.append(f"| {name} binary | tritonserver | {version} |")
            continue
        for name, version in packages.items():
            out.append(f"| {where} | {name} | {version} |")
    out += [
        "",
        "## Load",
        "",
        "- Models (the same ONNX files from `models/` for every system), one row per "
        "request: " + "; ".join(MODEL_NOTES[m] for m in a.models) + ".",
        f"- Closed loop at concurrency {', '.join(map(str, a.concurrency))}: that many "
        f"coroutines each send a request and wait for its answer; {a.warmup:g} s warm-up, "
        f"then {a.duration:g} s measured per point; {a.rounds} interleaved rounds, each "
        "starting a fresh server per system (order rotated each round); cells are the median "
        "over rounds with the range (min-max).",
        "- gRPC rows: one load generator for every server (`benchmarks/loadgen.py`): "
        "ModelInferRequest serialised once with raw_input_contents, sent as bytes on a plain "
        "`grpc.aio` channel with identity (de)serializers; streaming: one ModelStreamInfer "
        "stream per coroutine, one request in flight on each. HTTP row: the same loop with "
        "aiohttp, KServe v2 REST JSON to `POST /v2/models/<m>/infer`.",
        "- Server CPU per request: utime + stime of the server's whole process tree "
        "(`/proc/<pid>/stat` of it and every descendant) over the measured window, divided "
        "by the requests answered in it. The clients share the same cores: "
        + client_cpu(run) + ". *Other load*: the machine's busy CPU time during the window "
        "(`/proc/stat`) less the server's and the client's, in cores: work from outside the "
        "benchmark, which makes a point less trustworthy.",
        f"- tritonclient rows: `tritonclient.grpc.aio` (building InferInput from numpy per "
        f"request) at {', '.join(f'{m} c={c}' for m, c in HEADLINE)}, run in its own process.",
        "- Every peer runs ONNX Runtime 1.32 with one intra-op thread per session (as the bare "
        "server); zooserve uses its own default thread choice. Peers: Triton via "
        "nvidia-pytriton (the model run by ORT inside the bound Python function, max batch "
        "64, dynamic batching with no queue delay or none at all), KServe `ModelServer` with "
        "a `kserve.Model` (predict inline), MLServer with a custom runtime (its defaults, "
        "parallel inference workers included). Their code: `benchmarks/peers/`.",
        "",
        "## Commands",
        "",
        "```sh",
        f"{command}        # this run",
        "benchmarks/run                    # the full run: all systems, both models, c=1,8,32",
        "benchmarks/run --tiny --output /tmp/benchmarks.md   # CI's smoke run, seconds",
        ".venv/bin/python -m benchmarks.peers.venvs        # make the peers' venvs ahead",
        "```",
        "",
        "## Targets (issue 8), ratios within each round",
        "",
        *targets(run),
        "",
    ]
    for model in a.models:
        table = results_table(run, model, "loadgen")
        if table:
            out += [f"## {model}: throughput, latency, server CPU", "", *table, ""]
    table = [line for model in a.models for line in results_table(run, model, "tritonclient")]
    if table:
        out += ["## Headline points with tritonclient.grpc.aio", "",
                "The same servers and points, loaded by Triton's own Python client instead "
                "of pre-serialised bytes (the client's work per request is heavier).", ""]
        for model in a.models:
            part = results_table(run, model, "tritonclient")
            if part:
                out += [f"**{model}**", "", *part, ""]
    floor = floor_table(run)
    if floor:
        out += ["## Raw ONNX Runtime in-process (the floor)", "", *floor, ""]
    starts = starts_table(run)
    if starts:
        out += ["## Start-up", "", "From process start (Popen) to every benchmark model "
                "answering a real request (and, for zooserve, to the gRPC health service "
                "answering SERVING for `\"\"`); zooserve and BentoML load the whole zoo "
                f"(`models/`, {len(list((ROOT / 'models').iterdir()))} models), the others "
                "only the benchmark models.", "", *starts, ""]
    if run.install:
        cached = " (cached from an earlier run; same pyproject.toml)" if run.install.get(
            "cached") else ""
        out += ["## Serving install size", "",
                f"`pip install .[serve]` into a fresh Python {platform.python_version()} venv, "
                f"measured {run.install['measured']}{cached}: site-packages "
                f"{run.install['site_packages_mb']} MB, of which pip itself "
                f"{run.install['pip_mb']} MB; the serving install "
                f"**{run.install['serving_mb']} MB**.", ""]
    perf = perf_table(run)
    if perf:
        out += ["## Cross-check: perf_analyzer against zooserve", "",
                "Triton's perf_analyzer (its own C++ client; `--measurement-interval "
                f"{int(a.duration * 1000)}`, up to 5 trials, stable within 50%), one fresh "
                "zooserve; server stages from zooserve's statistics.", "", *perf, "",
                f"Command: `{run.perf_analyzer[0]['command']}` (model and concurrency varied)."
                , ""]
    if run.unavailable:
        out += ["## Not measured, or failed, in this run", "", "| row | why |", "|---|---|",
                *[f"| {k} | {v.replace('|', '/')} |" for k, v in run.unavailable.items()], ""]
    return "\n".join(out)


def kept_sections(previous: str) -> str:
    """The sections other commands wrote into BENCHMARKS.md between `<!-- kept: NAME -->`
    and `<!-- /kept: NAME -->` (benchmarks/library_search.py's), carried over unchanged when
    this run rewrites the rest of the file."""
    kept = re.findall(r"(<!-- kept: ([\w.-]+) -->.*?<!-- /kept: \2 -->)", previous, re.S)
    return "".join(f"\n{block}\n" for block, _ in kept)
