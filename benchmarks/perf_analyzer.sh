#!/usr/bin/env bash
# Throughput and latency of the gRPC frontend, measured by Triton's perf_analyzer (a client
# others wrote) against a real `zooserve serve` on the shipped models.
#
#   benchmarks/perf_analyzer.sh [MODEL] [CONCURRENCIES]      e.g. benchmarks/perf_analyzer.sh penguins "1 8"
#
# PERF_ANALYZER points at the binary (default: ../shared/tools/perf_analyzer, which runs
# Triton's build on this machine). A benchmark, not a test: it prints figures, asserts nothing.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
MODEL="${1:-penguins}"
CONCURRENCIES="${2:-1 8}"
PERF_ANALYZER="${PERF_ANALYZER:-$ROOT/../shared/tools/perf_analyzer}"
PORT="${PORT:-18101}"
LOG="$(mktemp)"

# --metrics-port 0: any free port, so a server already on 8002 does not stop the benchmark
"$ROOT/.venv/bin/zooserve" serve --models "$ROOT/models" --grpc-port "$PORT" --metrics-port 0 \
  --log-level WARNING >"$LOG" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; rm -f "$LOG"' EXIT
for _ in $(seq 100); do
  "$ROOT/.venv/bin/python" - "$PORT" <<'PY' && break
import sys, grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
try:
    with grpc.insecure_channel(f"127.0.0.1:{sys.argv[1]}") as ch:
        health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)
except grpc.RpcError:
    sys.exit(1)
PY
  sleep 0.2
done

echo "model $MODEL on $(nproc) cores, $(uname -m), zooserve at 127.0.0.1:$PORT"
for c in $CONCURRENCIES; do
  "$PERF_ANALYZER" -m "$MODEL" -u "127.0.0.1:$PORT" -i grpc --concurrency-range "$c:$c" \
    --measurement-interval 3000 --max-trials 20 2>&1 \
    | grep -E 'Request concurrency|Throughput|p50 latency|p99 latency|Avg request latency|Failed'
done
