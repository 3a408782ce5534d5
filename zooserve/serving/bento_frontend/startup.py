"""What the Bento does before and around serving: the settings its `@bentoml.service` config is
made of, the security settings (read once, when first needed), which stored models it declares,
where its models come from, the repository and DataPlane a worker opens, the gRPC server its
startup hook starts, and the one-line refusals that stop `bentoml serve` before a worker
restarts for ever.

Importing the service reads the environment (BentoML takes the HTTP address and the TLS files'
paths in the class decorator) and lists the stored models to declare (`bentoml build` packs
what the class declares); everything else happens in the deployment hook, the worker's
constructor and its startup hook: TLS files and the token are read there, models loaded, the
gRPC server started."""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

import bentoml
from bentoml._internal.bento import bento as bentoml_bento

from zooserve.serving.bento_frontend import store
from zooserve.serving.security import (
    BENTO_HEALTH_PATHS,
    BearerTokenMiddleware,
    Security,
    load_security,
)
from zooserve.serving.settings import Settings, SettingsError

log = logging.getLogger(__name__)

MODEL_SOURCES = ("folder", "store")
BENTO_HTTP_PORT = 3000  # BentoML's own default, unless ZOOSERVE_HTTP_PORT says otherwise


@functools.cache
def settings() -> Settings:
    """zooserve's settings (`ZOOSERVE_*`), read once per process."""
    return Settings.from_sources()


@functools.cache
def security() -> Security:
    """TLS, the token and reflection, read and checked once per process; SecurityError (one
    line) when unusable, which the deployment hook says before any worker starts."""
    return load_security(settings())


def http_config() -> dict[str, Any]:
    current = settings()
    return {"host": current.host,
            "port": BENTO_HTTP_PORT if current.http_port is None else current.http_port}


def ssl_config() -> dict[str, Any]:
    """The `ssl` section of @bentoml.service: the files' paths as the settings name them (the
    files themselves are read and checked by `security()`, in the deployment hook)."""
    current = settings()
    if current.tls_cert is None or current.tls_key is None:
        return {"enabled": False}
    named = Security(cert_chain=b"", client_ca=None if current.tls_client_ca is None else b"",
                     cert_path=current.tls_cert, key_path=current.tls_key,
                     client_ca_path=current.tls_client_ca)
    return named.bentoml_ssl_config()


class TokenGate:
    """The service's ASGI middleware: zooserve's bearer-token rules (every route but health
    needs the token when one is set; repository load/unload is refused without one), with
    the token read when BentoML builds the app in the worker rather than at import."""

    def __init__(self, app) -> None:
        self._gate = BearerTokenMiddleware(app, token=security().token,
                                           open_paths=BENTO_HEALTH_PATHS)

    async def __call__(self, scope, receive, send) -> None:
        await self._gate(scope, receive, send)


def check_before_serving() -> None:
    """In `bentoml serve` itself, once, before any worker starts: unusable TLS or token
    settings, or a gRPC port already taken, end it here with one line. Later the worker's
    startup hook would fail instead, and BentoML would restart the worker for ever."""
    from zooserve.serving.ports import check_port_free
    from zooserve.serving.security import SecurityError

    try:
        security()
    except SecurityError as exc:
        raise SystemExit(f"zooserve bento: error: {exc}") from None
    try:
        check_port_free(settings().host, settings().grpc_port, "gRPC")
    except OSError as exc:
        raise SystemExit(
            f"zooserve bento: error: {exc}; set ZOOSERVE_GRPC_PORT to a free port"
        ) from None


# The models


def _zoo_in_store() -> list[str]:
    try:
        return store.zoo_tags()
    except Exception as exc:  # an unreadable store must not stop a folder-backed server
        log.warning("cannot list BentoML's model store: %s", exc)
        return []


def building_a_bento() -> bool:
    """True while a Bento is being built from this module (`bentoml build`, or BentoML's
    Python build API that `zooserve bento build` calls). BentoML 1.4 has no build hook or
    flag to ask, so look for its `Bento.create` on the call stack; tests/test_bento_build.py
    fails if a BentoML upgrade moves it."""
    frame = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        if code.co_name == "create" and code.co_filename == bentoml_bento.__file__:
            return True
        frame = frame.f_back
    return False


def declared_models() -> list[str]:
    """The zoo models the service declares: those the Bento argument `models` names
    (comma-separated `name` or `name:version`), or every zooserve model in the store. A Bento
    with no model would build fine and serve nothing, so the build is refused here."""
    requested = getattr(bentoml.use_arguments(), "models", None)
    building = building_a_bento()
    if requested is None and not building:
        return _zoo_in_store()
    tags = store.select_zoo_tags(requested)
    if building and not tags:
        raise store.ZooStoreError(
            "refusing to build a Bento with no models: BentoML's model store "
            f"({store.store_location()}) holds no zooserve model; "
            "`zooserve bento build` imports the repository's models and builds the Bento "
            "(or run `zooserve bento import` before `bentoml build`)"
        )
    return tags


def model_source(running_from_bento: bool) -> str:
    source = os.environ.get("ZOOSERVE_MODEL_SOURCE", "").strip().lower()
    if not source:
        return "store" if running_from_bento else "folder"
    if source not in MODEL_SOURCES:
        raise SettingsError(
            f"ZOOSERVE_MODEL_SOURCE: must be one of {', '.join(MODEL_SOURCES)}, got '{source}'"
        )
    return source


class Models:
    """A worker's models: where they come from (`source`), the DataPlane serving them, and
    why the server can never be ready (`unready_reason`, "" if it can). `tags`: the stored
    models the service serves when they come from the store."""

    def __init__(self, source: str, tags: list[str]) -> None:
        from zooserve.serving.dataplane import DataPlane
        from zooserve.serving.server import model_kinds

        current = settings()
        self.source = source
        self._links: tempfile.TemporaryDirectory | None = None
        missing: list[str] = []
        if source == "store":
            self._links = tempfile.TemporaryDirectory(prefix="zooserve-store-")
            missing = store.missing_tags(tags)
            present = [tag for tag in tags if tag not in missing]
            root = store.repository_from_store(present, Path(self._links.name))
        else:
            root = current.models
        log.info("loading models from the %s %s", source, root)
        self.dataplane = DataPlane.from_settings(dataclasses.replace(current, models=root),
                                                 model_kinds())
        self.unready_reason = self._why_never_ready(missing)
        if self.unready_reason:
            log.error("not ready: %s", self.unready_reason)

    def _why_never_ready(self, missing: list[str]) -> str:
        """A one-line reason why this server can never become ready, or "" if it can."""
        if missing:
            return (
                f"model {', '.join(missing)} not in BentoML's model store "
                f"({store.store_location()}); `zooserve bento import` puts the zoo there"
            )
        if self.dataplane.index():
            return ""
        if self.source == "store":
            return (
                f"no models to serve: BentoML's model store ({store.store_location()}) holds "
                "no zooserve model; `zooserve bento import` puts the zoo there"
            )
        return f"no models to serve: no <name>/<version>/model.onnx under '{settings().models}'"

    def close(self) -> None:
        self.dataplane.close()
        if self._links is not None:
            self._links.cleanup()


# The gRPC server


async def start_grpc(dataplane, ready: bool):
    """The gRPC frontend on ZOOSERVE_GRPC_PORT; NOT_SERVING from the start when the server can
    never be ready. A port taken since the deployment hook looked stops `bentoml serve` rather
    than have BentoML restart this worker for ever."""
    from grpc_health.v1 import health_pb2

    from zooserve.serving.grpc_frontend.server import INFERENCE_SERVICE, start_grpc_server

    current = settings()
    try:
        grpc = await start_grpc_server(dataplane, current.host, current.grpc_port,
                                       security=security())
    except OSError as exc:
        log.error("%s; stopping bentoml serve (set ZOOSERVE_GRPC_PORT to a free port)", exc)
        _stop_bentoml_serve()
        raise
    if not ready:  # a gRPC probe must not see SERVING either
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", INFERENCE_SERVICE):
            await grpc.health.set(name, not_serving)
    return grpc


def _stop_bentoml_serve() -> None:
    """Ask the `bentoml serve` that started this worker to stop (SIGTERM to its parent, when
    that is BentoML's arbiter), so that a worker that cannot serve is not restarted for ever."""
    parent = os.getppid()
    try:
        with open(f"/proc/{parent}/cmdline", "rb") as f:
            command = f.read().replace(b"\0", b" ")
    except OSError:
        return
    if b"bentoml" in command:
        os.kill(parent, signal.SIGTERM)
