"""The server's settings: one object, read once from flags and `ZOOSERVE_*` environment
variables (flags win), then handed down. Containers set the environment; people use flags."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

DEVICES = ("auto", "cpu", "cuda", "tensorrt")
# How the model repository may change under a running server, as Triton's
# --model-control-mode: "none" (what was there at start), "explicit" (RepositoryModelLoad and
# RepositoryModelUnload), "poll" (the folder is rescanned every `poll_interval` seconds).
MODEL_CONTROL_MODES = ("none", "explicit", "poll")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class SettingsError(ValueError):
    """A setting that cannot be used; the message names the flag or variable."""


@dataclass(frozen=True)
class Settings:
    models: Path = Path("models")
    host: str = "127.0.0.1"
    grpc_port: int = 8001
    # HTTP: 8000 for `zooserve serve` (as Triton), 3000 for the Bento (as BentoML) when unset.
    http_port: int | None = None
    metrics_port: int = 8002  # Prometheus metrics of `zooserve serve`, as Triton's
    device: str = "auto"
    max_batch_size: int = 1024
    log_level: str = "INFO"
    # Requests run on this many threads at once (ONNX Runtime releases the GIL).
    inference_threads: int = 4
    # ONNX Runtime intra-op threads per session; 0 (or "auto"): chosen from the CPU limit
    # and inference_threads (zooserve.serving.cpus.auto_intra_op_threads).
    ort_threads: int = 0
    # On SIGTERM: seconds to wait for the requests in flight before closing anyway.
    drain_timeout: float = 30.0
    # On SIGTERM: seconds health reads NOT_SERVING while new requests are still taken, so
    # load balancers notice before anything is refused.
    drain_delay: float = 3.0
    # Ready only when every model version loaded; off: ready when some model serves (a model
    # that failed is still reported, by ModelReady, the index and its own health name).
    require_all_models: bool = False
    # Admission control: inference requests taken on and not yet answered, in this process
    # across every model; beyond it RESOURCE_EXHAUSTED at once.
    max_inflight: int = 1024
    # Each model's queue, unless its serving.json sets max_queue_size.
    max_queue_size: int = 256
    # Largest gRPC message and HTTP body accepted, in bytes.
    max_request_bytes: int = 64 * 1024 * 1024
    # HTTP connections (zooserve/serving/http_frontend/connection.py). Seconds from a request's
    # first
    # byte to the end of its head; longest wait for the next piece of a body being read; how
    # long a connection with no request in progress stays open (longer than the 60 s idle
    # timeout of common load balancers, as nginx's 75 s keep-alive, so the balancer closes
    # first); connections open at once per process.
    http_header_timeout: float = 10.0
    http_body_timeout: float = 30.0
    http_idle_timeout: float = 75.0
    http_max_connections: int = 1000
    # Bytes of HTTP request bodies held at once per process, all connections together, from
    # before a body is read until its request is answered (a Content-Length is reserved
    # before the body is read); a request beyond it gets 503.
    http_body_buffer_bytes: int = 256 * 1024 * 1024
    # none, explicit or poll (MODEL_CONTROL_MODES); poll_interval: seconds between rescans.
    model_control: str = "none"
    poll_interval: float = 5.0
    # TLS for gRPC and HTTP: certificate and key (PEM files); with a client CA, clients must
    # present a certificate it signed (mutual TLS).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    # Bearer-token authentication on every RPC and HTTP route but health: the token, from a
    # file (a mounted secret) or from ZOOSERVE_AUTH_TOKEN (no flag, so it stays out of `ps`).
    auth_token_file: Path | None = None
    auth_token: str | None = field(default=None, repr=False)
    # gRPC server reflection (grpcurl and friends list the services).
    reflection: bool = True
    # SO_REUSEPORT on the gRPC and HTTP listeners, so another process may share the ports
    # (`--workers` shares them between its own workers regardless).
    reuse_port: bool = False
    # Where ONNX Runtime's optimised graphs are kept between starts (zooserve.serving.runtime,
    # optimized_model_cache); "off" (None): optimise at every start.
    cache_dir: Path | None = field(default_factory=lambda: default_cache_dir())
    # Worker processes, each with its own models, sharing the gRPC and HTTP ports
    # (zooserve.serving.workers); 1: one process, no sharing.
    workers: int = 1

    @classmethod
    def from_sources(
        cls, flags: Mapping[str, object] | None = None, environ: Mapping[str, str] | None = None
    ) -> Settings:
        """Defaults, overridden by ZOOSERVE_<NAME> variables, overridden by flags that are set."""
        flags = flags or {}
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            variable = f"ZOOSERVE_{f.name.upper()}"
            flag = "--" + f.name.replace("_", "-")
            if flags.get(f.name) is not None:
                raw, source = flags[f.name], flag
            elif environ.get(variable, "") != "":
                raw, source = environ[variable], variable
            else:
                continue
            values[f.name] = _convert(f.name, raw, source)
        settings = cls(**values)
        if settings.http_body_buffer_bytes < settings.max_request_bytes:
            raise SettingsError(
                f"http_body_buffer_bytes ({settings.http_body_buffer_bytes}) must be at least "
                f"max_request_bytes ({settings.max_request_bytes}), or the largest body allowed "
                "could never be read (--http-body-buffer-bytes / ZOOSERVE_HTTP_BODY_BUFFER_BYTES)"
            )
        return settings


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "zooserve" / "onnxruntime"


def _convert(name: str, raw: object, source: str) -> object:
    text = str(raw).strip()
    if name == "models":
        return Path(text)
    if name in {"tls_cert", "tls_key", "tls_client_ca", "auth_token_file"}:
        return Path(text) if text else None
    if name == "auth_token":
        return str(raw)
    if name in {"require_all_models", "reflection", "reuse_port"}:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise SettingsError(f"{source}: expected true or false, got '{text}'")
    if name == "model_control":
        if text.lower() not in MODEL_CONTROL_MODES:
            raise SettingsError(
                f"{source}: must be one of {', '.join(MODEL_CONTROL_MODES)}, got '{text}'"
            )
        return text.lower()
    if name == "cache_dir":
        return None if text.lower() in {"off", "none"} else Path(text)
    if name in {"grpc_port", "http_port", "metrics_port"}:
        port = _integer(text, source)
        if not 0 <= port <= 65535:
            raise SettingsError(f"{source}: port must be between 0 and 65535, got {text}")
        return port
    if name in {"max_batch_size", "inference_threads", "workers", "max_inflight",
                "max_queue_size", "max_request_bytes", "http_max_connections",
                "http_body_buffer_bytes"}:
        value = _integer(text, source)
        if value < 1:
            raise SettingsError(f"{source}: must be at least 1, got {text}")
        return value
    if name == "ort_threads":
        if text.lower() == "auto":
            return 0
        value = _integer(text, source)
        if value < 0:
            raise SettingsError(
                f"{source}: must be 0 or auto (chosen from the CPU limit) "
                f"or a number of threads, got {text}"
            )
        return value
    if name in {"drain_timeout", "drain_delay", "poll_interval", "http_header_timeout",
                "http_body_timeout", "http_idle_timeout"}:
        try:
            value = float(text)
        except ValueError:
            raise SettingsError(f"{source}: expected seconds, got '{text}'") from None
        if not 0 <= value <= 3600:
            raise SettingsError(f"{source}: must be between 0 and 3600 seconds, got {text}")
        if (name == "poll_interval" or name.startswith("http_")) and value < 0.1:
            raise SettingsError(f"{source}: must be at least 0.1 seconds, got {text}")
        return value
    if name == "device":
        if text.lower() not in DEVICES:
            raise SettingsError(f"{source}: must be one of {', '.join(DEVICES)}, got '{text}'")
        return text.lower()
    if name == "log_level":
        if text.upper() not in LOG_LEVELS:
            raise SettingsError(f"{source}: must be one of {', '.join(LOG_LEVELS)}, got '{text}'")
        return text.upper()
    return text


def _integer(text: str, source: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise SettingsError(f"{source}: expected an integer, got '{text}'") from None
