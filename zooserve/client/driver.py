"""The two clients and what they share: the channel's settings and TLS credentials, the bearer
token, what is kept about each model and library, and every method written once as steps
(the module note of zooserve.client); `Client` sends each step's RPC blocking, `AsyncClient`
over `grpc.aio`."""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import grpc

from zooserve.client.inference import infer_request, model_info, prediction
from zooserve.client.results import (
    ClientError,
    Match,
    ModelEntry,
    ModelInfo,
    Prediction,
    SearchResults,
)
from zooserve.client.search import (
    Library,
    library_of,
    search_matches,
    search_parameters,
    search_queries,
    search_request,
)
from zooserve.protocol.credentials import PemSource, tls_credentials
from zooserve.protocol.generated import grpc_service_pb2 as pb
from zooserve.protocol.generated import grpc_service_pb2_grpc as pb_grpc

# As large as the server takes and sends (zooserve.serving.grpc_frontend.server's
# MAX_MESSAGE_BYTES).
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# Server answers after which what the client keeps about a model may be out of date.
STALE_CODES = frozenset({"NOT_FOUND", "INVALID_ARGUMENT", "FAILED_PRECONDITION"})


# Credentials


def _channel_credentials(
    tls: bool, root_certificates: PemSource, client_certificate: PemSource,
    client_key: PemSource,
) -> grpc.ChannelCredentials | None:
    if not (tls or root_certificates or client_certificate or client_key):
        return None
    if (client_certificate is None) != (client_key is None):
        raise ClientError("mutual TLS needs both client_certificate and client_key")
    try:
        return tls_credentials(root_certificates, client_certificate, client_key)
    except OSError as exc:
        raise ClientError(str(exc)) from None


def _bearer(token: str | None) -> tuple[tuple[str, str], ...] | None:
    if token is None:
        return None
    token = token.strip()
    if not token or not token.isascii() or any(c.isspace() for c in token):
        raise ClientError("the token must be one word of ASCII characters")
    return (("authorization", f"Bearer {token}"),)


# The calls, written once for both clients


@dataclass(frozen=True, slots=True)
class _Call:
    method: str  # a GRPCInferenceService method
    request: Any


Steps = Generator[_Call, Any, Any]


class _Client:
    """What the sync and async clients share: settings, the models' metadata, and every
    method as steps (see the module's note)."""

    def __init__(
        self, url: str = "localhost:8001", timeout: float = 10.0, *, tls: bool = False,
        root_certificates: PemSource = None,
        client_certificate: PemSource = None,
        client_key: PemSource = None,
        server_name: str | None = None, token: str | None = None,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self._credentials = _channel_credentials(tls, root_certificates, client_certificate,
                                                 client_key)
        self._options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                         ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]
        if server_name:
            self._options.append(("grpc.ssl_target_name_override", server_name))
        self._metadata = _bearer(token)
        self._models: dict[tuple[str, str], ModelInfo] = {}
        self._libraries: dict[tuple[str, str], Library] = {}

    def _error(self, exc: grpc.RpcError, timeout: float) -> ClientError:
        code = exc.code()
        name = code.name if code is not None else "UNKNOWN"
        details = exc.details() or ""
        if code == grpc.StatusCode.DEADLINE_EXCEEDED and details == "Deadline Exceeded":
            return self._late(timeout)  # gRPC's own words: the client's deadline passed
        if code == grpc.StatusCode.UNAVAILABLE:
            message = f"the server at {self.url} is unavailable: {details}"
        else:
            message = details or name
        return ClientError(message, name)

    def _late(self, timeout: float) -> ClientError:
        return ClientError(f"no answer from {self.url} within the timeout of {timeout:g} s",
                           "DEADLINE_EXCEEDED")

    def _timeout(self, timeout: float | None) -> float:
        return self.timeout if timeout is None else timeout

    def _info_steps(self, model: str, version: str) -> Steps:
        metadata = yield _Call("ModelMetadata",
                               pb.ModelMetadataRequest(name=model, version=version))
        config = yield _Call("ModelConfig", pb.ModelConfigRequest(name=model, version=version))
        info = model_info(metadata, config)
        self._models[(model, version)] = info
        return info

    def _predict_steps(self, model: str, x: object, version: str) -> Steps:
        key = (model, version)
        info = self._models.get(key)
        if info is None:
            info = yield from self._info_steps(model, version)
        try:
            request, index = infer_request(info, model, version, x)
            response = yield _Call("ModelInfer", request)
            return prediction(info, response, index)
        except ClientError as error:
            if error.code is None or error.code in STALE_CODES:
                self._models.pop(key, None)
            raise

    def _search_steps(
        self, library: str, spectra: object, top_k: int, precursor_tolerance: float | None,
        min_score: float | None, version: str,
    ) -> Steps:
        queries = search_queries(spectra)
        parameters = search_parameters(top_k, precursor_tolerance, min_score)
        key = (library, version)
        found = self._libraries.get(key)
        try:
            if found is None:
                config = yield _Call("ModelConfig",
                                     pb.ModelConfigRequest(name=library, version=version))
                found = self._libraries[key] = library_of(library, config)
            batches = found.batches(len(queries.ids))
            matches: list[list[Match]] = []
            for start, stop in batches:
                request = search_request(library, version, queries, slice(start, stop),
                                          parameters, precursor_tolerance is not None)
                try:
                    response = yield _Call("ModelInfer", request)
                except ClientError as error:
                    if len(batches) == 1 or error.code != "INVALID_ARGUMENT":
                        raise
                    # the server counts the rows of its own request: say which they are
                    raise ClientError(f"queries {start}..{stop - 1}, sent together: {error}",
                                      error.code) from None
                matches += search_matches(response, stop - start)
        except ClientError as error:
            if error.code is None or error.code in STALE_CODES:
                self._libraries.pop(key, None)
            raise
        return SearchResults(queries.ids, matches, dict(found.summary))

    def _models_steps(self) -> Steps:
        index = yield _Call("RepositoryIndex", pb.RepositoryIndexRequest())
        return [ModelEntry(m.name, m.version, m.state, m.reason) for m in index.models]

    def _ready_steps(self, name: str | None, version: str) -> Steps:
        if name is None:
            reply = yield _Call("ServerReady", pb.ServerReadyRequest())
        else:
            reply = yield _Call("ModelReady", pb.ModelReadyRequest(name=name, version=version))
        return reply.ready


class _Run:
    """One method call: its steps under one deadline. It hands out the RPC to send next
    with the seconds left for it (`left`) and takes back the answer or the failure; the two
    clients differ only in how they send. A step whose time ran out before it was sent
    (building a large request) fails as late without being sent."""

    def __init__(self, client: _Client, steps: Steps, timeout: float | None) -> None:
        self._client = client
        self._steps = steps
        self._timeout = client._timeout(timeout)
        self._deadline = time.monotonic() + self._timeout
        self._answer: Any = None
        self._error: ClientError | None = None
        self.left = self._timeout
        self.result: Any = None

    def next_call(self) -> _Call | None:
        """The next RPC, or None when the steps are done (`result` is then their value);
        a failure the steps do not handle is raised from here."""
        try:
            while True:
                if self._error is None:
                    call = self._steps.send(self._answer)
                else:
                    call = self._steps.throw(self._error)
                self.left = self._deadline - time.monotonic()
                if self.left > 0:
                    return call
                self._error = self._client._late(self._timeout)
        except StopIteration as done:
            self.result = done.value
            return None

    def answered(self, answer: Any) -> None:
        self._answer, self._error = answer, None

    def failed(self, exc: grpc.RpcError) -> None:
        self._error = self._client._error(exc, self._timeout)


class Client(_Client):
    """A blocking client over one gRPC channel; thread-safe. `url`: host:port of the gRPC
    port. `timeout`: seconds a call may take (each method takes its own too). TLS when `tls`
    or any certificate is given: `root_certificates` (a path or PEM bytes; None trusts the
    system's CAs), `client_certificate` and `client_key` for mutual TLS, `server_name` when
    the certificate names another host than `url`'s. `token`: sent as
    `authorization: Bearer <token>` with every call."""

    def __init__(self, url: str = "localhost:8001", timeout: float = 10.0, **settings) -> None:
        super().__init__(url, timeout, **settings)
        if self._credentials is None:
            self._channel = grpc.insecure_channel(url, options=self._options)
        else:
            self._channel = grpc.secure_channel(url, self._credentials, options=self._options)
        self._stub = pb_grpc.GRPCInferenceServiceStub(self._channel)

    def _drive(self, steps: Steps, timeout: float | None) -> Any:
        """Run the steps' RPCs in turn, each within what is left of the call's timeout."""
        run = _Run(self, steps, timeout)
        while (call := run.next_call()) is not None:
            try:
                run.answered(getattr(self._stub, call.method)(
                    call.request, timeout=run.left, metadata=self._metadata))
            except grpc.RpcError as exc:
                run.failed(exc)
        return run.result

    def predict(
        self, model: str, x: object, version: str = "", timeout: float | None = None
    ) -> Prediction:
        """The model's prediction for `x`: an array or nested list (one input), a DataFrame
        (columns matched to the model's feature names), or {input name: values}."""
        return self._drive(self._predict_steps(model, x, version), timeout)

    def search(
        self, library: str, spectra: object, top_k: int = 10, *,
        precursor_tolerance: float | None = None, min_score: float | None = None,
        version: str = "", timeout: float | None = None,
    ) -> SearchResults:
        """The `top_k` entries of the spectral library `library` most like each query, best
        first. `spectra`: an MGF file's path, or an iterable of `zooserve.spectra.mgf.Spectrum` or
        of
        dicts {"mz": [...], "intensity": [...], "precursor_mz": 301.1, "id": "..."}
        ("precursor_mz" and "id" optional). With `precursor_tolerance`, only entries whose
        precursor m/z is within it of the query's qualify (a query without one is not
        windowed); with `min_score`, only entries scoring at least that. More queries than
        the library takes at once go in several requests, under the one timeout."""
        return self._drive(self._search_steps(library, spectra, top_k, precursor_tolerance,
                                              min_score, version), timeout)

    def metadata(self, name: str, version: str = "", timeout: float | None = None) -> ModelInfo:
        """The model's inputs, outputs, labels, feature names, description and versions
        (asked anew, and kept for `predict`)."""
        return self._drive(self._info_steps(name, version), timeout)

    def models(self, timeout: float | None = None) -> list[ModelEntry]:
        """The repository index: every model version with its state."""
        return self._drive(self._models_steps(), timeout)

    def ready(self, name: str | None = None, version: str = "",
              timeout: float | None = None) -> bool:
        """Whether the server (or the model `name`) is ready for inference."""
        return self._drive(self._ready_steps(name, version), timeout)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class AsyncClient(_Client):
    """`Client` over `grpc.aio`: the same settings and methods, as coroutines; make it in
    the event loop that uses it."""

    def __init__(self, url: str = "localhost:8001", timeout: float = 10.0, **settings) -> None:
        super().__init__(url, timeout, **settings)
        if self._credentials is None:
            self._channel = grpc.aio.insecure_channel(url, options=self._options)
        else:
            self._channel = grpc.aio.secure_channel(url, self._credentials,
                                                    options=self._options)
        self._stub = pb_grpc.GRPCInferenceServiceStub(self._channel)

    async def _drive(self, steps: Steps, timeout: float | None) -> Any:
        """Client._drive, awaiting each RPC."""
        run = _Run(self, steps, timeout)
        while (call := run.next_call()) is not None:
            try:
                run.answered(await getattr(self._stub, call.method)(
                    call.request, timeout=run.left, metadata=self._metadata))
            except grpc.RpcError as exc:
                run.failed(exc)
        return run.result

    async def predict(
        self, model: str, x: object, version: str = "", timeout: float | None = None
    ) -> Prediction:
        return await self._drive(self._predict_steps(model, x, version), timeout)

    async def search(
        self, library: str, spectra: object, top_k: int = 10, *,
        precursor_tolerance: float | None = None, min_score: float | None = None,
        version: str = "", timeout: float | None = None,
    ) -> SearchResults:
        return await self._drive(self._search_steps(library, spectra, top_k,
                                                    precursor_tolerance, min_score, version),
                                 timeout)

    async def metadata(
        self, name: str, version: str = "", timeout: float | None = None
    ) -> ModelInfo:
        return await self._drive(self._info_steps(name, version), timeout)

    async def models(self, timeout: float | None = None) -> list[ModelEntry]:
        return await self._drive(self._models_steps(), timeout)

    async def ready(self, name: str | None = None, version: str = "",
                    timeout: float | None = None) -> bool:
        return await self._drive(self._ready_steps(name, version), timeout)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()
