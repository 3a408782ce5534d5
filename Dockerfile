# zooserve as a container image: the gRPC model server and the models it carries.
#
#   DOCKER_BUILDKIT=1 docker build --target cpu -t zooserve:cpu .
#   DOCKER_BUILDKIT=1 docker build --target gpu -t zooserve:gpu .
#   DOCKER_BUILDKIT=1 docker build --target cpu --build-arg MODELS=penguins -t zooserve-penguins:cpu .
#   docker run --rm -p 8001:8001 -p 8002:8002 zooserve:cpu
#   docker run --rm --gpus all -p 8001:8001 -p 8002:8002 zooserve:gpu
#
# `zooserve image build` runs these builds with the right arguments (see the README).
#
# Build arguments:
#   BASE              any Debian 12 image with Python 3.11 and its venv module, for every stage
#                     [python:3.11-slim-bookworm]; scripts/image-base makes a local stand-in
#                     where no registry can be reached
#   MODELS            the repository models the image carries, comma or space separated
#                     [all of models/]
#   GPU_REQUIREMENTS  the gpu target's pins in deploy/image/: requirements-gpu-cuda13.txt
#                     (onnxruntime-gpu 1.31, host driver >= 580) or requirements-gpu-cuda12.txt
#                     (onnxruntime-gpu 1.26, older drivers)
#   VERSION, SOURCE, REVISION  for the OCI labels
#
# pip in the builder knows only the index it is told. Where the public index is not the one
# to use, pass a pip.conf and a CA bundle as BuildKit secrets (`--secret id=pipconf,src=...`,
# `--secret id=cacert,src=...`): secrets are mounted for one RUN and never stored in a layer.

ARG BASE=python:3.11-slim-bookworm

# ---- builders: the serving packages in a virtual environment; the chosen models ------------
# Packages first and models last, so that images with other models reuse the package layers.
FROM ${BASE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/zooserve
COPY deploy/image/requirements-*.txt /src/requirements/

FROM builder AS builder-cpu
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=secret,id=pipconf \
    --mount=type=secret,id=cacert \
    if [ -f /run/secrets/pipconf ]; then export PIP_CONFIG_FILE=/run/secrets/pipconf; fi \
    && /opt/zooserve/bin/pip install --require-hashes --no-deps -r /src/requirements/requirements-cpu.txt
# The project itself, without its dependencies (installed above from the pins).
COPY pyproject.toml README.md /src/project/
COPY zooserve/ /src/project/zooserve/
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=secret,id=pipconf \
    --mount=type=secret,id=cacert \
    if [ -f /run/secrets/pipconf ]; then export PIP_CONFIG_FILE=/run/secrets/pipconf; fi \
    && /opt/zooserve/bin/pip install --no-deps /src/project

FROM builder AS builder-gpu
ARG GPU_REQUIREMENTS=requirements-gpu-cuda13.txt
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=secret,id=pipconf \
    --mount=type=secret,id=cacert \
    if [ -f /run/secrets/pipconf ]; then export PIP_CONFIG_FILE=/run/secrets/pipconf; fi \
    && /opt/zooserve/bin/pip install --require-hashes --no-deps -r "/src/requirements/${GPU_REQUIREMENTS}"
COPY pyproject.toml README.md /src/project/
COPY zooserve/ /src/project/zooserve/
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=secret,id=pipconf \
    --mount=type=secret,id=cacert \
    if [ -f /run/secrets/pipconf ]; then export PIP_CONFIG_FILE=/run/secrets/pipconf; fi \
    && /opt/zooserve/bin/pip install --no-deps /src/project

# The models: all of models/, or the ones MODELS names. A name that is not there stops the build.
FROM ${BASE} AS models
COPY models/ /src/models/
COPY deploy/image/select-models.sh /src/select-models.sh
ARG MODELS=""
RUN sh /src/select-models.sh /src/models /models "${MODELS}"

# ---- runtime: the base, the environment, the models; nothing else ---------------------------
FROM ${BASE} AS runtime
ARG VERSION=0.1.0
ARG SOURCE=""
ARG REVISION=""
ARG MODELS=""
LABEL org.opencontainers.image.title="zooserve" \
      org.opencontainers.image.description="Open Inference Protocol v2 (gRPC and HTTP) model server with the models it carries" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.revision="${REVISION}" \
      io.zooserve.models="${MODELS}"
# Settings come from ZOOSERVE_* variables; the image listens on every interface. Nothing is
# written outside /tmp, so the root filesystem can be read-only (mount a tmpfs at /tmp).
ENV PATH=/opt/zooserve/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    ZOOSERVE_MODELS=/models \
    ZOOSERVE_HOST=0.0.0.0 \
    ZOOSERVE_GRPC_PORT=8001 \
    ZOOSERVE_HTTP_PORT=8000 \
    ZOOSERVE_METRICS_PORT=8002
# Open Inference Protocol v2 over gRPC and over HTTP (KServe v2 REST), and Prometheus metrics,
# on Triton's port numbers.
EXPOSE 8001 8000 8002
# One numeric user, not root; Kubernetes can check runAsNonRoot against a number.
USER 10001:10001
# For plain `docker run`; Kubernetes ignores it and uses its own gRPC probes.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 CMD ["zooserve", "health"]
# zooserve is PID 1 and handles SIGTERM itself: it stops taking requests and finishes those
# in flight before it exits.
ENTRYPOINT ["zooserve", "serve"]

FROM runtime AS gpu
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    ZOOSERVE_DEVICE=cuda
COPY --from=builder-gpu /opt/zooserve /opt/zooserve
COPY --from=models /models /models
# Every card readable and every model file where the card says: checked at build time.
RUN ["zooserve", "models"]

# Last, so that a build without --target makes the CPU image.
FROM runtime AS cpu
ENV ZOOSERVE_DEVICE=cpu
COPY --from=builder-cpu /opt/zooserve /opt/zooserve
COPY --from=models /models /models
RUN ["zooserve", "models"]
