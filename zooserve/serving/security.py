"""TLS and bearer-token authentication for every frontend: `zooserve serve` (gRPC and HTTP)
and the BentoML service.

Both are off by default, for use on one's own machine; the server logs one line saying so.
What turns them on are the settings `tls_cert` and `tls_key` (PEM files; with `tls_client_ca`
clients must present a certificate that CA signed: mutual TLS) and the token, from
`auth_token_file` (a mounted secret) or from the environment variable ZOOSERVE_AUTH_TOKEN.

With a token, every gRPC method and HTTP route needs `authorization: Bearer <token>` (gRPC
metadata or HTTP header), compared in constant time, except health: gRPC
`grpc.health.v1.Health/*` and HTTP `/v2/health/live`, `/v2/health/ready` (and BentoML's
`/livez`, `/readyz`, `/healthz`), so probes need no secret. Reflection needs the token too.
Loading and unloading models (Triton's repository extension) always needs one: with no token
configured those calls are refused (PERMISSION_DENIED, HTTP 403), since anyone who can reach
the port could otherwise swap the models.

Everything is checked by `load_security` before any model loads, and a setting that cannot be
used is one line (SecurityError, a SettingsError) naming the flag and the variable. Nothing
here ever logs or echoes a token."""

from __future__ import annotations

import hmac
import logging
import re
import ssl
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from zooserve.serving.settings import Settings, SettingsError

log = logging.getLogger(__name__)

# gRPC: the full method names ("/package.Service/Method") as the interceptor sees them.
GRPC_HEALTH_PREFIX = "/grpc.health.v1.Health/"
GRPC_REPOSITORY_CONTROL_METHODS = frozenset({
    "/inference.GRPCInferenceService/RepositoryModelLoad",
    "/inference.GRPCInferenceService/RepositoryModelUnload",
})
# HTTP: the paths open without a token, for `zooserve serve` and for the Bento (BentoML's own
# probes too).
HTTP_HEALTH_PATHS = frozenset({"/v2/health/live", "/v2/health/ready"})
BENTO_HEALTH_PATHS = HTTP_HEALTH_PATHS | {"/livez", "/readyz", "/healthz"}
# POST /v2/repository/models/{name}/load and .../unload (Triton's HTTP repository extension).
HTTP_REPOSITORY_CONTROL_PATH = re.compile(r"^/v2/repository/models/[^/]+/(load|unload)/?$")

TOKEN_FLAGS = "--auth-token-file (ZOOSERVE_AUTH_TOKEN_FILE) or ZOOSERVE_AUTH_TOKEN"
NO_TOKEN_FOR_REPOSITORY = (
    "loading and unloading models needs authentication, and this server has no token: "
    f"set {TOKEN_FLAGS} and send 'authorization: Bearer <token>'"
)
# A token travels in an HTTP header and in gRPC metadata: visible ASCII, no spaces.
_TOKEN_CHARACTERS = re.compile(r"^[\x21-\x7e]+$")
MIN_TOKEN_LENGTH = 16


class SecurityError(SettingsError):
    """A TLS or token setting that cannot be used; the message names the flag and variable."""


@dataclass(frozen=True)
class Security:
    """What the frontends need: the TLS files (read and checked), the token, reflection."""

    cert_chain: bytes | None = None  # PEM; None: plaintext
    private_key: bytes | None = field(default=None, repr=False)
    client_ca: bytes | None = None  # PEM; set: client certificates are required
    cert_path: Path | None = None
    key_path: Path | None = None
    client_ca_path: Path | None = None
    token: str | None = field(default=None, repr=False)
    token_source: str = ""  # where the token came from, for the log: never the token
    reflection: bool = True

    @property
    def tls(self) -> bool:
        return self.cert_chain is not None

    @property
    def mutual_tls(self) -> bool:
        return self.client_ca is not None

    def describe(self) -> str:
        """One log line: what is on and off, the files, never a secret."""
        if self.tls:
            tls = f"TLS on (certificate {self.cert_path}"
            tls += (f", client certificates required, signed by {self.client_ca_path})"
                    if self.mutual_tls else ", no client certificates)")
        else:
            tls = "TLS off (plaintext)"
        if self.token:
            auth = (f"bearer-token authentication on (token from {self.token_source}; "
                    "health is open)")
        else:
            auth = "authentication off (every route open but model load/unload)"
        line = f"security: {tls}, {auth}, gRPC reflection {'on' if self.reflection else 'off'}"
        if not self.tls and not self.token:
            line += "; for local use only, see docs/security.md to turn them on"
        return line

    # gRPC

    def grpc_server_credentials(self):
        """grpc.ServerCredentials for add_secure_port, or None for plaintext."""
        if not self.tls:
            return None
        return grpc.ssl_server_credentials(
            [(self.private_key, self.cert_chain)],
            root_certificates=self.client_ca,
            require_client_auth=self.mutual_tls,
        )

    def grpc_interceptors(self) -> list:
        return [BearerTokenInterceptor(self.token)]

    # HTTP

    def uvicorn_ssl_options(self) -> dict[str, Any]:
        """The keyword arguments of uvicorn.Config for TLS ({} for plaintext)."""
        if not self.tls:
            return {}
        options: dict[str, Any] = {"ssl_certfile": str(self.cert_path),
                                   "ssl_keyfile": str(self.key_path)}
        if self.mutual_tls:
            options["ssl_ca_certs"] = str(self.client_ca_path)
            options["ssl_cert_reqs"] = ssl.CERT_REQUIRED
        return options

    def bentoml_ssl_config(self) -> dict[str, Any]:
        """The `ssl` section of @bentoml.service (its uvicorn gets the same files)."""
        if not self.tls:
            return {"enabled": False}
        config: dict[str, Any] = {"enabled": True, "certfile": str(self.cert_path),
                                  "keyfile": str(self.key_path)}
        if self.mutual_tls:
            config["ca_certs"] = str(self.client_ca_path)
            config["cert_reqs"] = int(ssl.CERT_REQUIRED)
        return config

    def wrap_asgi(self, app, open_paths: Iterable[str] = HTTP_HEALTH_PATHS):
        return BearerTokenMiddleware(app, token=self.token, open_paths=open_paths)


PLAINTEXT = Security()


def load_security(settings: Settings) -> Security:
    """Read and check the TLS files and the token; SecurityError (one line) if unusable."""
    cert, key, client_ca = settings.tls_cert, settings.tls_key, settings.tls_client_ca
    if cert is not None and key is None:
        raise SecurityError("--tls-cert (ZOOSERVE_TLS_CERT) is set but --tls-key "
                            "(ZOOSERVE_TLS_KEY) is not: TLS needs the certificate and its key")
    if key is not None and cert is None:
        raise SecurityError("--tls-key (ZOOSERVE_TLS_KEY) is set but --tls-cert "
                            "(ZOOSERVE_TLS_CERT) is not: TLS needs the certificate and its key")
    if client_ca is not None and cert is None:
        raise SecurityError("--tls-client-ca (ZOOSERVE_TLS_CLIENT_CA) is set without "
                            "--tls-cert and --tls-key: mutual TLS needs the server's own "
                            "certificate and key too")
    values: dict[str, Any] = {"reflection": settings.reflection}
    if cert is not None and key is not None:
        cert_pem = _read_pem(cert, "--tls-cert (ZOOSERVE_TLS_CERT)", "CERTIFICATE")
        key_pem = _read_pem(key, "--tls-key (ZOOSERVE_TLS_KEY)", "PRIVATE KEY")
        _check_pair(cert, key)
        values.update(cert_chain=cert_pem, private_key=key_pem, cert_path=cert, key_path=key)
        if client_ca is not None:
            ca_pem = _read_pem(client_ca, "--tls-client-ca (ZOOSERVE_TLS_CLIENT_CA)",
                               "CERTIFICATE")
            _check_ca(client_ca)
            values.update(client_ca=ca_pem, client_ca_path=client_ca)
    token, source = _load_token(settings)
    values.update(token=token, token_source=source)
    return Security(**values)


def _read_pem(path: Path, what: str, kind: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SecurityError(f"{what}: cannot read '{path}' ({exc.strerror})") from None
    if b"-----BEGIN " not in data or kind.encode() + b"-----" not in data:
        raise SecurityError(f"{what}: '{path}' holds no PEM {kind.lower()} "
                            f"(a '-----BEGIN ...{kind}-----' block)")
    return data


def _check_pair(cert: Path, key: Path) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(str(cert), str(key))
    except (ssl.SSLError, ValueError) as exc:
        raise SecurityError(
            f"--tls-cert/--tls-key (ZOOSERVE_TLS_CERT/ZOOSERVE_TLS_KEY): '{cert}' and '{key}' "
            f"are not a usable certificate and matching unencrypted private key "
            f"({getattr(exc, 'reason', None) or exc})"
        ) from None


def _check_ca(client_ca: Path) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_verify_locations(cafile=str(client_ca))
    except (ssl.SSLError, ValueError) as exc:
        raise SecurityError(f"--tls-client-ca (ZOOSERVE_TLS_CLIENT_CA): '{client_ca}' is not a "
                            f"usable CA certificate ({getattr(exc, 'reason', None) or exc})"
                            ) from None


def _load_token(settings: Settings) -> tuple[str | None, str]:
    path, value = settings.auth_token_file, settings.auth_token
    if path is not None and value is not None:
        raise SecurityError("both --auth-token-file (ZOOSERVE_AUTH_TOKEN_FILE) and "
                            "ZOOSERVE_AUTH_TOKEN are set: set one of them")
    if path is not None:
        what = "--auth-token-file (ZOOSERVE_AUTH_TOKEN_FILE)"
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise SecurityError(f"{what}: cannot read '{path}' ({exc.strerror})") from None
        try:
            token = raw.decode("ascii").strip()
        except UnicodeDecodeError:
            raise SecurityError(f"{what}: '{path}' is not ASCII text") from None
        source, where = f"the file {path}", f"{what}: '{path}'"
    elif value is not None:
        token, source, where = value.strip(), "ZOOSERVE_AUTH_TOKEN", "ZOOSERVE_AUTH_TOKEN"
    else:
        return None, ""
    if not token:
        raise SecurityError(f"{where} is empty: the token must be at least "
                            f"{MIN_TOKEN_LENGTH} characters")
    if not _TOKEN_CHARACTERS.match(token):
        raise SecurityError(f"{where}: the token must be printable ASCII without spaces or "
                            "line breaks (it travels in an HTTP header)")
    if len(token) < MIN_TOKEN_LENGTH:
        raise SecurityError(f"{where}: the token is {len(token)} characters; use at least "
                            f"{MIN_TOKEN_LENGTH} (e.g. `openssl rand -hex 32`)")
    return token, source


# The check both frontends share


def bearer_problem(value: str | bytes | None, expected: bytes) -> str | None:
    """Why an authorization value does not carry the expected token, or None if it does.
    The message names what is wrong, never the token."""
    if value is None:
        return "missing bearer token: send 'authorization: Bearer <token>'"
    if isinstance(value, str):
        value = value.encode("latin-1", errors="replace")
    scheme, _, presented = value.strip().partition(b" ")
    if scheme.lower() != b"bearer" or not presented.strip():
        return "the authorization value is not 'Bearer <token>'"
    if not hmac.compare_digest(presented.strip(), expected):
        return "wrong bearer token"
    return None


# gRPC


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """grpc.aio server interceptor: health passes; repository load/unload needs a configured
    token; with a token, everything else needs it (UNAUTHENTICATED otherwise)."""

    def __init__(self, token: str | None):
        self._expected = token.encode("ascii") if token else None

    async def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        if method.startswith(GRPC_HEALTH_PREFIX):
            return await continuation(handler_call_details)
        if self._expected is None:
            if method in GRPC_REPOSITORY_CONTROL_METHODS:
                handler = await continuation(handler_call_details)
                return _refusal(handler, grpc.StatusCode.PERMISSION_DENIED,
                                NO_TOKEN_FOR_REPOSITORY)
            return await continuation(handler_call_details)
        value = None
        for key, item in handler_call_details.invocation_metadata or ():
            if key == "authorization":
                value = item
                break
        problem = bearer_problem(value, self._expected)
        handler = await continuation(handler_call_details)
        if problem is None:
            return handler
        return _refusal(handler, grpc.StatusCode.UNAUTHENTICATED, problem)


def _refusal(handler, code, message: str):
    """A method handler of the same kind as `handler` that only answers `code`."""

    async def refuse(_request, context):
        await context.abort(code, message)

    async def refuse_stream(_request, context):
        await context.abort(code, message)
        yield  # never reached: makes this an async generator, as a streaming handler is

    if handler is not None and handler.response_streaming:
        if handler.request_streaming:
            return grpc.stream_stream_rpc_method_handler(refuse_stream)
        return grpc.unary_stream_rpc_method_handler(refuse_stream)
    if handler is not None and handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse)
    return grpc.unary_unary_rpc_method_handler(refuse)


# HTTP (ASGI)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class BearerTokenMiddleware:
    """ASGI middleware with the interceptor's rules: the health paths pass; repository
    load/unload is 403 without a configured token; with a token, every other path is 401
    (`WWW-Authenticate: Bearer`, JSON `{"error": ...}`) unless the request carries it."""

    def __init__(self, app, token: str | None = None,
                 open_paths: Iterable[str] = HTTP_HEALTH_PATHS):
        self.app = app
        self._expected = token.encode("ascii") if token else None
        self._open = frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in self._open:
            await self.app(scope, receive, send)
            return
        if self._expected is None:
            if HTTP_REPOSITORY_CONTROL_PATH.match(scope["path"]):
                await _refuse(scope, receive, send, 403, NO_TOKEN_FOR_REPOSITORY)
                return
            await self.app(scope, receive, send)
            return
        value = None
        for key, item in scope.get("headers", ()):
            if key == b"authorization":
                value = item
                break
        problem = bearer_problem(value, self._expected)
        if problem is None:
            await self.app(scope, receive, send)
            return
        await _refuse(scope, receive, send, 401, problem,
                      invalid=value is not None)


async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, message: str,
                  invalid: bool = False) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})
        return
    from starlette.responses import JSONResponse

    headers = {}
    if status == 401:
        headers["WWW-Authenticate"] = ('Bearer realm="zooserve", error="invalid_token"'
                                       if invalid else 'Bearer realm="zooserve"')
    await JSONResponse({"error": message}, status_code=status, headers=headers)(
        scope, receive, send)
