# Sourced by scripts/test: the OCI registry tools the registry tests use (tests/helpers/registry.py):
# Debian's docker-registry (CNCF distribution 2.8, started by the tests on a loopback port) and
# skopeo (a registry client others wrote, to read what `zooserve push` wrote). Installed as root
# when missing; without root the registry tests skip, saying why.

ensure_registry_tools() {
  if command -v docker-registry >/dev/null && command -v skopeo >/dev/null; then
    return 0
  fi
  if [ "$(id -u)" != 0 ]; then
    echo "registry tests: need docker-registry and skopeo (apt-get install docker-registry skopeo, as root)" >&2
    return 0
  fi
  echo "installing docker-registry and skopeo ..." >&2
  export DEBIAN_FRONTEND=noninteractive
  # The package's own service would listen on :5000; policy-rc.d keeps it from starting.
  local policy=/usr/sbin/policy-rc.d made_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && made_policy=1
  fi
  apt-get install -y -q docker-registry skopeo >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q docker-registry skopeo >/dev/null; }
  if [ "$made_policy" = 1 ]; then rm -f "$policy"; fi
}
