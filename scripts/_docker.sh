# Sourced by scripts/test: a Docker engine for the container tests (tests/test_container_image.py).
#
# Uses the engine that answers if there is one. Otherwise, as root: installs Debian's docker.io
# and debootstrap when they are missing, starts dockerd (overlay2; no iptables and no bridge, so
# containers use the host's network) and stops it when the calling script exits.
# Exports DOCKER, the client the tests and `zooserve image build` use: Debian's /usr/bin/docker,
# which builds with BuildKit without the buildx plugin.

ensure_docker_engine() {
  export DOCKER="${DOCKER:-/usr/bin/docker}"
  if [ ! -x "$DOCKER" ] || ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
    if [ "$(id -u)" != 0 ]; then
      echo "container tests: need docker.io and debootstrap (apt-get install docker.io debootstrap, as root)" >&2
      return 1
    fi
    echo "installing docker.io and debootstrap ..." >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q docker.io debootstrap >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null && apt-get install -y -q docker.io debootstrap >/dev/null; }
  fi
  if "$DOCKER" info >/dev/null 2>&1; then
    return 0
  fi
  if [ "$(id -u)" != 0 ]; then
    echo "container tests: no Docker engine answers and only root can start one" >&2
    return 1
  fi
  local log="${TMPDIR:-/tmp}/zooserve-dockerd.log"
  echo "starting dockerd (log: $log) ..." >&2
  dockerd --storage-driver=overlay2 --iptables=false --bridge=none >"$log" 2>&1 &
  ZOOSERVE_DOCKERD_PID=$!
  trap stop_docker_engine EXIT
  local waited=0
  until "$DOCKER" info >/dev/null 2>&1; do
    if ! kill -0 "$ZOOSERVE_DOCKERD_PID" 2>/dev/null || [ "$waited" -ge 60 ]; then
      echo "dockerd did not start:" >&2
      tail -n 20 "$log" >&2
      return 1
    fi
    sleep 1
    waited=$((waited + 1))
  done
}

stop_docker_engine() {
  if [ -n "${ZOOSERVE_DOCKERD_PID:-}" ] && kill -0 "$ZOOSERVE_DOCKERD_PID" 2>/dev/null; then
    kill "$ZOOSERVE_DOCKERD_PID"
    wait "$ZOOSERVE_DOCKERD_PID" 2>/dev/null || true
  fi
}
