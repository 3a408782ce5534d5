"""One command that measures zooserve beside its floors and peers, side by side in one run, and
writes BENCHMARKS.md: machine, versions, load, the commands to repeat, the tables, the targets.

    benchmarks/run                                   # the full run (about 20 minutes here)
    benchmarks/run --systems bare,zooserve,kserve --models penguins --rounds 2
    benchmarks/run --tiny --output /tmp/b.md         # CI: floors and zooserve, seconds

Rounds are interleaved: each round goes once over every system (in a rotated order), starting a
fresh server, loading it at every model and concurrency, and stopping it; figures are medians
over the rounds with their range (min-max). Ratios in the targets are taken within each round
(both sides measured minutes apart on the same machine) and then summarised the same way.
Figures, never assertions: nothing here fails because something is slow."""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import loadgen, payloads, report, systems
from benchmarks.peers import venvs
from benchmarks.run_record import HEADLINE, PERF_ANALYZER, ROOT, Run

ALL_SYSTEMS = ["ort", *systems.SYSTEMS]
TINY_SYSTEMS = ["ort", "bare", "zooserve"]


# --- measuring -------------------------------------------------------------------------------

def measure_floor(run: Run, round_no: int) -> None:
    a = run.args
    out = subprocess.run([sys.executable, "-m", "benchmarks.floors.raw_ort", "--duration",
                          str(a.floor_duration), *a.models], cwd=ROOT, capture_output=True,
                         text=True)
    if out.returncode:
        run.unavailable["ort"] = f"raw_ort failed: {out.stderr.strip()[-300:]}"
        return
    data = json.loads(out.stdout)
    run.floors.append({"round": round_no, **data})
    for model, figures in data["models"].items():
        run.log(f"  ort {model}: b1 {figures['b1']['throughput']:.0f}/s, "
                f"b32 {max(v['throughput'] for k, v in figures.items() if k.startswith('b32')):.0f}"
                " rows/s")


def start_system(run: Run, system: systems.System, round_no: int,
                 log_dir: Path) -> systems.Running | None:
    """A fresh server, tried twice (someone's half-finished edit may stop zooserve once)."""
    for attempt in (1, 2):
        try:
            running = system.start(log_dir)
        except RuntimeError as exc:
            reason = str(exc).splitlines()[0]
            run.log(f"  {system.key}: did not start ({reason})")
            if attempt == 2:
                run.unavailable.setdefault(system.key, f"did not start: {reason}")
                return None
            time.sleep(run.args.retry_wait)
            continue
        run.starts.append({"round": round_no, "system": system.key,
                           "ready_s": running.ready_s, "serving_s": running.serving_s})
        run.log(f"  {system.key}: ready in {running.ready_s:.2f} s"
                + (f" (health SERVING at {running.serving_s:.2f} s)" if running.serving_s
                   else ""))
        return running
    return None


def _crashed(running: systems.Running, model: str, point: loadgen.Point) -> bool:
    """Whether a point with no answers left the server unable to answer at all."""
    if point.requests or not point.errors:
        return False
    if running.process.poll() is not None:
        return True
    try:
        systems.answers(running, model)
    except Exception:
        return True
    return False


def measure_system(run: Run, system: systems.System, round_no: int, log_dir: Path) -> None:
    a = run.args
    running = start_system(run, system, round_no, log_dir)
    if running is None:
        return
    try:
        if system.key.startswith("triton") and "triton" not in run.versions.get("_server", {}):
            run.versions.setdefault("_server", {})["triton"] = _tritonserver_version(running.log)
        modes = ["http"] if system.protocol == "http" else ["unary"]
        if system.stream:
            why = systems.stream_available(running.grpc_target)
            if why:
                run.unavailable[f"{system.key}/stream"] = why
            else:
                modes.append("stream")
        for model in a.models:
            for c in a.concurrency:
                for mode in modes:
                    try:
                        point = _load(running, system, mode, model, c, a)
                    except Exception as exc:  # one broken point must not end the run
                        run.unavailable.setdefault(f"{system.key}/{mode} {model} c={c}",
                                                   f"load failed: {exc!r}"[:300])
                        continue
                    _keep(run, round_no, system.key, mode, "loadgen", model, c, point)
                    if _crashed(running, model, point):
                        # keep the failed point (its errors show), note the crash, go on with
                        # a fresh server for the points left
                        run.unavailable[f"{system.key} crash, round {round_no + 1}"] = (
                            f"stopped answering at {model} c={c} {mode}; restarted; log "
                            f"{running.log}: {systems.last_error_line(running.log)}")
                        run.log(f"  {system.key}: crashed; restarting")
                        systems.stop(running)
                        running = start_system(run, system, round_no, log_dir)
                        if running is None:
                            return
                if (a.tritonclient and system.protocol == "grpc" and (model, c) in HEADLINE
                        and not system.workers):
                    try:
                        point = _tritonclient_load(running, model, c, a)
                    except Exception as exc:
                        run.unavailable.setdefault(f"{system.key}/tritonclient {model} c={c}",
                                                   f"load failed: {exc!r}"[:300])
                        continue
                    _keep(run, round_no, system.key, "unary", "tritonclient", model, c, point)
    finally:
        if running is not None:
            systems.stop(running)


def _load(running: systems.Running, system: systems.System, mode: str, model: str, c: int,
          a: argparse.Namespace) -> loadgen.Point:
    if mode == "http":
        return loadgen.http_post(f"{running.http_url}/v2/models/{model}/infer",
                                 payloads.rest_body(model), c, a.duration, a.warmup, running.pid)
    request = payloads.infer_request_bytes(model, system.typed)
    if mode == "stream":
        return loadgen.grpc_stream(running.grpc_target, request, c, a.duration, a.warmup,
                                   running.pid)
    connections = min(c, 4 * system.workers) if system.workers else 1
    return loadgen.grpc_unary(running.grpc_target, request, c, a.duration, a.warmup,
                              running.pid, connections)


def _tritonclient_load(running: systems.Running, model: str, c: int,
                       a: argparse.Namespace) -> loadgen.Point:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.tritonclient_load", "--target", running.grpc_target,
         "--model", model, "--concurrency", str(c), "--duration", str(a.duration),
         "--warmup", str(a.warmup), "--server-pid", str(running.pid)],
        cwd=ROOT, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"tritonclient_load exited {out.returncode}: "
                           f"{out.stderr.strip().splitlines()[-1:]}")
    return loadgen.Point(**json.loads(out.stdout))


def _keep(run: Run, round_no: int, system: str, mode: str, client: str, model: str, c: int,
          point: loadgen.Point) -> None:
    run.points.append({"round": round_no, "system": system, "mode": mode, "client": client,
                       "model": model, "c": c, **point.as_dict()})
    cpu = f"{point.server_cpu_ms:.2f}" if point.server_cpu_ms is not None else "-"
    err = f", {point.errors} errors ({point.first_error[:80]})" if point.errors else ""
    run.log(f"    {system}/{mode}/{client} {model} c={c}: {point.throughput:,.0f}/s "
            f"p50 {point.p50_ms:.2f} ms p99 {point.p99_ms:.2f} ms cpu {cpu} ms/req{err}")


def _tritonserver_version(log: Path) -> str:
    for line in log.read_text(errors="replace").splitlines():
        if "server_version" in line:
            return line.split("|")[2].strip()
    return "?"


def measure_perf_analyzer(run: Run, log_dir: Path) -> None:
    """perf_analyzer (Triton's own client tool) against one fresh zooserve, as a cross-check."""
    if not PERF_ANALYZER.exists():
        run.unavailable["perf_analyzer"] = f"{PERF_ANALYZER} not found"
        return
    a = run.args
    try:
        running = systems.SYSTEMS["zooserve"].start(log_dir)
    except RuntimeError as exc:
        run.unavailable["perf_analyzer"] = f"zooserve did not start: {str(exc).splitlines()[0]}"
        return
    try:
        streaming = not systems.stream_available(running.grpc_target)
        points = [(m, c) for m, c in (("penguins", 1), ("penguins", 8), ("digits", 32))
                  if m in a.models]
        for model, c in points:
            for stream in ([False, True] if streaming and model == "penguins" else [False]):
                row = _perf_analyzer_point(running, model, c, stream, a, log_dir)
                run.perf_analyzer.append(row)
                run.log(f"  perf_analyzer {model} c={c}{' stream' if stream else ''}: "
                        f"{row.get('throughput', row.get('error'))}")
    finally:
        systems.stop(running)


def _perf_analyzer_point(running: systems.Running, model: str, c: int, stream: bool,
                         a: argparse.Namespace, log_dir: Path) -> dict:
    csv = log_dir / f"perf-{model}-{c}-{int(stream)}.csv"
    argv = [str(PERF_ANALYZER), "-m", model, "-u", running.grpc_target, "-i", "grpc",
            "--concurrency-range", f"{c}:{c}", "--measurement-interval",
            str(int(a.duration * 1000)), "--max-trials", "5", "--stability-percentage", "50",
            "-f", str(csv)]
    if stream:
        argv.append("--streaming")
    row = {"model": model, "c": c, "stream": stream,
           "command": " ".join(shlex.quote(x) for x in argv[:-2])}
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if out.returncode or not csv.exists():
        tail = (out.stdout + out.stderr).strip().splitlines()
        row["error"] = tail[-1] if tail else f"exit {out.returncode}"
        return row
    header, values = csv.read_text().splitlines()[:2]
    fields = dict(zip(header.split(","), values.split(","), strict=True))
    us = lambda name: float(fields.get(name, "nan")) / 1000  # noqa: E731 (usec -> ms)
    row.update(throughput=float(fields["Inferences/Second"]), p50_ms=us("p50 latency"),
               p99_ms=us("p99 latency"), server_queue_ms=us("Server Queue"),
               server_input_ms=us("Server Compute Input"),
               server_infer_ms=us("Server Compute Infer"),
               server_output_ms=us("Server Compute Output"),
               network_ms=us("Network+Server Send/Recv"))
    return row


def serving_install_size(run: Run) -> None:
    """du -sm of site-packages after `pip install .[serve]` into a fresh venv, cached on the
    contents of pyproject.toml (the dependency list decides the size)."""
    key = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    cache = venvs.CACHE / "install-size.json"
    if cache.exists():
        cached = json.loads(cache.read_text())
        if cached.get("key") == key:
            run.install = {**cached, "cached": True}
            return
    run.log("measuring the size of a fresh serving install (pip install .[serve])")
    with tempfile.TemporaryDirectory(prefix="zooserve-install-") as tmp:
        source = Path(tmp) / "src"
        source.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy(ROOT / name, source / name)
        for package in ("zooserve",):
            shutil.copytree(ROOT / package, source / package,
                            ignore=shutil.ignore_patterns("__pycache__", "data", "*.csv"))
        venv = Path(tmp) / "venv"
        subprocess.run([shutil.which("python3.11") or sys.executable, "-m", "venv", str(venv)],
                       check=True)
        result = subprocess.run([str(venv / "bin/python"), "-m", "pip", "install", "--quiet",
                                 "--disable-pip-version-check", f"{source}[serve]"],
                                capture_output=True, text=True)
        if result.returncode:
            run.unavailable["install-size"] = f"pip install failed: {result.stderr[-300:]}"
            return
        site = next((venv / "lib").glob("python3*/site-packages"))
        total = _du_mb(site)
        pip_mb = sum(_du_mb(p) for p in site.glob("pip*"))
        run.install = {"key": key, "site_packages_mb": total, "pip_mb": pip_mb,
                       "serving_mb": total - pip_mb,
                       "measured": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")}
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(run.install))
    run.install["cached"] = False


def _du_mb(path: Path) -> int:
    return int(subprocess.run(["du", "-sm", str(path)], capture_output=True, text=True,
                              check=True).stdout.split()[0])


# --- the run ---------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchmarks/run", description=__doc__.splitlines()[0])
    parser.add_argument("--systems", default=None,
                        help=f"comma list of {','.join(ALL_SYSTEMS)} [all]")
    parser.add_argument("--models", default="penguins,digits", help="[penguins,digits]")
    parser.add_argument("--concurrency", default="1,8,32", help="[1,8,32]")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds [3]")
    parser.add_argument("--duration", type=float, default=3.0,
                        help="seconds measured per point [3]")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up [1]")
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--json", type=Path, default=venvs.CACHE / "last-run.json",
                        help="also write every point here [~/.cache/zooserve/benchmarks/"
                             "last-run.json]")
    parser.add_argument("--no-tritonclient", dest="tritonclient", action="store_false",
                        help="skip the tritonclient.grpc.aio headline points")
    parser.add_argument("--no-perf-analyzer", dest="perf", action="store_false")
    parser.add_argument("--no-install-size", dest="install_size", action="store_false")
    parser.add_argument("--tiny", action="store_true",
                        help="CI mode: ort, bare, zooserve on penguins at c=1,2, 1 s a point, "
                             "no peers, no network")
    a = parser.parse_args(argv)
    a.argv = list(sys.argv[1:] if argv is None else argv)
    if a.tiny:
        a.systems = a.systems or ",".join(TINY_SYSTEMS)
        a.models = "penguins" if a.models == "penguins,digits" else a.models
        a.concurrency = "1,2" if a.concurrency == "1,8,32" else a.concurrency
        a.rounds = 2 if a.rounds == 3 else a.rounds
        a.duration = 1.0 if a.duration == 3.0 else a.duration
        a.warmup = 0.3 if a.warmup == 1.0 else a.warmup
        a.tritonclient = a.perf = a.install_size = False
    a.systems = [s.strip() for s in (a.systems or ",".join(ALL_SYSTEMS)).split(",") if s.strip()]
    unknown = set(a.systems) - set(ALL_SYSTEMS)
    if unknown:
        parser.error(f"unknown systems {sorted(unknown)}; choose from {ALL_SYSTEMS}")
    a.models = [m.strip() for m in a.models.split(",") if m.strip()]
    if set(a.models) - set(payloads.MODELS):
        parser.error(f"models are {list(payloads.MODELS)}")
    a.concurrency = [int(c) for c in a.concurrency.split(",")]
    a.floor_duration = min(2.0, a.duration)
    a.retry_wait = 5 if a.tiny else 45
    return a


def prepare(run: Run) -> list[systems.System]:
    """The server systems to measure, their venvs made; rows that cannot run are noted."""
    chosen = []
    for key in run.args.systems:
        if key == "ort":
            continue
        system = systems.SYSTEMS[key]
        if system.workers and not systems.zooserve_has_workers():
            run.unavailable[key] = "`zooserve serve --help` lists no --workers yet"
            continue
        if system.peer:
            try:
                venvs.ensure(system.peer, log=run.log)
            except subprocess.CalledProcessError as exc:
                run.unavailable[key] = f"could not make the {system.peer} venv: {exc}"
                continue
        chosen.append(system)
    return chosen


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)
    run = Run(a)
    servers = prepare(run)
    run.versions = report.versions(servers)
    log_dir = Path(tempfile.mkdtemp(prefix="zooserve-bench-"))
    run.log(f"logs in {log_dir}; systems {a.systems}; {a.rounds} rounds of {a.duration} s "
            f"points (+{a.warmup} s warm-up)")
    try:
        for round_no in range(a.rounds):
            run.log(f"round {round_no + 1}/{a.rounds}")
            if "ort" in a.systems:
                measure_floor(run, round_no)
            shift = round_no % max(1, len(servers))
            for system in servers[shift:] + servers[:shift]:
                measure_system(run, system, round_no, log_dir)
        if a.perf and "zooserve" in a.systems:
            measure_perf_analyzer(run, log_dir)
        if a.install_size:
            serving_install_size(run)
    except BaseException as exc:  # keep what was measured, say the run was cut short
        run.unavailable["(the run itself)"] = f"stopped early: {exc!r}"[:300]
        write(run, a)
        raise
    write(run, a)


def write(run: Run, a: argparse.Namespace) -> None:
    elapsed = time.monotonic() - run.started
    previous = a.output.read_text() if a.output.exists() else ""
    a.output.write_text(report.markdown(run, elapsed) + report.kept_sections(previous))
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps({"points": run.points, "floors": run.floors,
                                  "starts": run.starts, "unavailable": run.unavailable,
                                  "perf_analyzer": run.perf_analyzer, "install": run.install,
                                  "versions": run.versions}, indent=1, default=str))
    run.log(f"wrote {a.output} and {a.json} in {elapsed / 60:.1f} min")


if __name__ == "__main__":
    main()
