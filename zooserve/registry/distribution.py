"""A client of the OCI distribution API (what every registry speaks: distribution, Harbor,
GHCR, ECR, Docker Hub), just what sharing a version needs: check, upload and fetch blobs;
put and get a manifest. Standard library only, so `zooserve pull` runs in any install.

Authentication follows the registry's 401 challenge: Basic with the credentials found for
the host (zooserve.registry.credentials), or Bearer, fetching a token from the realm the
challenge names (with those credentials, when there are any) for the scope it asks.

Nothing a registry sends is trusted to be small or right: a manifest is read up to
MANIFEST_MAX bytes, a blob is streamed to disk with its digest and size checked as it
arrives (more bytes than declared stops the download), and every failure is one
RegistryError line naming the registry and what it said."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from zooserve.registry.credentials import Credentials

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST)
MANIFEST_MAX = 4 << 20  # what distribution itself accepts
ERROR_BODY_MAX = 64 << 10  # read of an error answer, for its message
TOKEN_MAX = 1 << 20
CHUNK = 1 << 20
TIMEOUT_S = 60.0
ANY_SCOPE = ""


class RegistryError(Exception):
    """The registry could not be reached or refused; one line saying which and why."""


class DigestMismatch(RegistryError):
    """A blob or manifest's bytes are not those its digest names."""


@dataclass
class _Answer:
    status: int
    headers: dict[str, str]
    body: BinaryIO


@dataclass
class RegistryClient:
    """One registry host, reached over HTTPS (trusting the system's CAs, or `ca_file`) or,
    with `plain_http`, over HTTP."""

    host: str  # host[:port] of the API
    credentials: Credentials | None = None
    plain_http: bool = False
    ca_file: Path | None = None
    # scope -> Authorization header (ANY_SCOPE: Basic, sent with every request)
    _authorization: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._context = None
        if not self.plain_http:
            try:
                self._context = ssl.create_default_context(
                    cafile=str(self.ca_file) if self.ca_file else None)
            except (OSError, ssl.SSLError) as exc:
                raise RegistryError(f"cannot read the CA file {self.ca_file}: {exc}") from None
        handlers: list = [urllib.request.HTTPSHandler(context=self._context)] \
            if self._context else []
        self._opener = urllib.request.build_opener(_NoAuthOnRedirect(), *handlers)

    # -- the API ---------------------------------------------------------------------------

    def blob_exists(self, repository: str, digest: str) -> bool:
        answer = self._call("HEAD", f"/v2/{repository}/blobs/{digest}", repository, "pull",
                            ok=(200, 404))
        return answer.status == 200

    def upload_blob(self, repository: str, digest: str, size: int, path: Path) -> None:
        """Upload a file as one blob (a monolithic upload: POST, then PUT of the bytes)."""
        started = self._call("POST", f"/v2/{repository}/blobs/uploads/", repository,
                             "push,pull", ok=(202,), body=b"")
        location = started.headers.get("location", "")
        if not location:
            raise RegistryError(f"{self.host} started an upload without saying where (no "
                                "Location header)")
        separator = "&" if "?" in location else "?"
        target = f"{location}{separator}digest={urllib.parse.quote(digest)}"
        with open(path, "rb") as stream:
            self._call("PUT", target, repository, "push,pull", ok=(201,), body=stream,
                       headers={"Content-Type": "application/octet-stream",
                                "Content-Length": str(size)})

    def put_manifest(self, repository: str, reference: str, manifest: bytes,
                     media_type: str) -> str:
        """PUT a manifest under a tag (or its digest); returns its digest."""
        self._call("PUT", f"/v2/{repository}/manifests/{reference}", repository, "push,pull",
                   ok=(201,), body=manifest, headers={"Content-Type": media_type})
        return "sha256:" + hashlib.sha256(manifest).hexdigest()

    def get_manifest(self, repository: str, reference: str) -> tuple[str, bytes, str]:
        """The manifest a tag or digest names: (media type, bytes, digest). The bytes are
        checked against the digest when the reference is one."""
        answer = self._call("GET", f"/v2/{repository}/manifests/{reference}", repository,
                            "pull", ok=(200,), headers={"Accept": ", ".join(MANIFEST_TYPES)})
        body = answer.body.read(MANIFEST_MAX + 1)
        if len(body) > MANIFEST_MAX:
            raise RegistryError(f"the manifest of {repository}:{reference} is larger than "
                                f"{MANIFEST_MAX >> 20} MiB")
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if reference.startswith("sha256:") and digest != reference:
            raise DigestMismatch(f"{self.host} sent a manifest for {reference} whose bytes "
                                 f"have the digest {digest}")
        media_type = answer.headers.get("content-type", "").split(";")[0].strip()
        return media_type, body, digest

    def fetch_blob(self, repository: str, digest: str, size: int, destination: Path) -> None:
        """Stream a blob into `destination`, refusing it (and removing the file) when its
        size or sha256 is not the one the manifest declared."""
        answer = self._call("GET", f"/v2/{repository}/blobs/{digest}", repository, "pull",
                            ok=(200,))
        hasher, received = hashlib.sha256(), 0
        try:
            with open(destination, "wb") as out:
                for block in iter(lambda: answer.body.read(CHUNK), b""):
                    received += len(block)
                    if received > size:
                        raise DigestMismatch(f"{self.host} sent more than the {size} bytes "
                                             f"declared for blob {digest}")
                    hasher.update(block)
                    out.write(block)
            if received != size:
                raise DigestMismatch(f"{self.host} sent {received} bytes of blob {digest}, "
                                     f"which declares {size}")
            if "sha256:" + hasher.hexdigest() != digest:
                raise DigestMismatch(f"blob {digest} from {self.host} does not match its "
                                     f"digest (its bytes hash to sha256:{hasher.hexdigest()})")
        except BaseException:
            destination.unlink(missing_ok=True)
            raise
        finally:
            answer.body.close()

    # -- requests and authentication ---------------------------------------------------------

    def _url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        scheme = "http" if self.plain_http else "https"
        return f"{scheme}://{self.host}{path}"

    def _call(self, method: str, path: str, repository: str, actions: str, *,
              ok: tuple[int, ...], body=None, headers: dict[str, str] | None = None) -> _Answer:
        """One request, answered once more after a 401 with the credentials it asks for."""
        scope = f"repository:{repository}:{actions}"
        answer = self._send_authorized(method, path, scope, body, headers)
        if answer.status == 401:
            challenge = answer.headers.get("www-authenticate", "")
            answer.body.close()
            header = self._authorize(challenge, scope)
            # Basic is the same for every scope; a bearer token is good for its scope only.
            self._authorization[ANY_SCOPE if header.startswith("Basic ") else scope] = header
            answer = self._send_authorized(method, path, scope, body, headers)
        if answer.status in ok:
            return answer
        raise RegistryError(self._refusal(method, path, answer, repository))

    def _send_authorized(self, method: str, path: str, scope: str, body,
                         headers: dict[str, str] | None) -> _Answer:
        request_headers = dict(headers or {})
        authorization = self._authorization.get(scope) or self._authorization.get(ANY_SCOPE)
        if authorization:
            request_headers["Authorization"] = authorization
        if hasattr(body, "seek"):  # a file sent again after a 401
            body.seek(0)
        return self._send(method, self._url(path), body, request_headers)

    def _send(self, method: str, url: str, body, headers: dict[str, str]) -> _Answer:
        request = urllib.request.Request(url, data=body, method=method, headers=headers)
        try:
            response = self._opener.open(request, timeout=TIMEOUT_S)
        except urllib.error.HTTPError as error:
            return _Answer(error.code, _lower(error.headers), error)
        except urllib.error.URLError as error:
            raise RegistryError(self._unreachable(error.reason)) from None
        except (OSError, ValueError) as error:  # a reset connection, a bad Location
            raise RegistryError(self._unreachable(error)) from None
        return _Answer(response.status, _lower(response.headers), response)

    def _unreachable(self, reason: object) -> str:
        text = str(reason)
        if isinstance(reason, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY" in text:
            return (f"cannot reach {self.host}: its TLS certificate is not trusted ({text}); "
                    "--tls-ca FILE trusts a private CA")
        if isinstance(reason, ssl.SSLError) or "WRONG_VERSION_NUMBER" in text:
            return (f"cannot reach {self.host} over TLS ({text}); a plain-HTTP registry on "
                    "loopback needs --plain-http")
        return f"cannot reach {self.host}: {text}"

    def _authorize(self, challenge: str, scope: str) -> str:
        scheme, _, rest = challenge.partition(" ")
        params = dict(re.findall(r'(\w+)="([^"]*)"', rest))
        if scheme.lower() == "basic":
            if self.credentials is None:
                raise RegistryError(f"{self.host} asks for a user name and password and none "
                                    f"were found: `docker login {self.host}`, or set "
                                    "ZOOSERVE_REGISTRY_USERNAME and ZOOSERVE_REGISTRY_PASSWORD")
            pair = f"{self.credentials.username}:{self.credentials.password}".encode()
            return "Basic " + base64.b64encode(pair).decode()
        if scheme.lower() == "bearer" and params.get("realm"):
            return "Bearer " + self._token(params, scope)
        raise RegistryError(f"{self.host} asks for authentication zooserve does not speak "
                            f"({scheme or 'no WWW-Authenticate header'})")

    def _token(self, params: dict[str, str], scope: str) -> str:
        """A bearer token from the challenge's realm (the Docker token protocol; an OAuth2
        refresh token, Docker's identitytoken, is exchanged by POST)."""
        query = {"service": params.get("service", ""), "scope": params.get("scope", scope)}
        realm = params["realm"]
        if not realm.startswith(("https://", "http://")):
            raise RegistryError(f"{self.host} named a token realm that is not a URL")
        headers, body = {}, None
        credentials = self.credentials
        if credentials is not None and credentials.identity_token:
            body = urllib.parse.urlencode({
                **query, "grant_type": "refresh_token", "client_id": "zooserve",
                "refresh_token": credentials.identity_token}).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            url = realm
        else:
            url = f"{realm}{'&' if '?' in realm else '?'}{urllib.parse.urlencode(query)}"
            if credentials is not None:
                pair = f"{credentials.username}:{credentials.password}".encode()
                headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        answer = self._send("POST" if body else "GET", url, body, headers)
        text = answer.body.read(TOKEN_MAX)
        answer.body.close()
        if answer.status in (401, 403):
            raise RegistryError(f"{self.host}'s token service refused the credentials"
                                f"{_source(credentials)} ({answer.status})")
        if answer.status != 200:
            raise RegistryError(f"{self.host}'s token service answered {answer.status}")
        try:
            token = json.loads(text).get("token") or json.loads(text).get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise RegistryError(f"{self.host}'s token service sent no token")
        return token

    def _refusal(self, method: str, path: str, answer: _Answer, repository: str) -> str:
        try:
            detail = _error_text(answer.body.read(ERROR_BODY_MAX))
        finally:
            answer.body.close()
        said = f" ({detail})" if detail else ""
        if answer.status == 401:
            return (f"{self.host} refused the credentials{_source(self.credentials)} for "
                    f"{repository}: 401 unauthorized{said}")
        if answer.status == 403:
            return f"{self.host} denied access to {repository}: 403 forbidden{said}"
        if answer.status == 404:
            return f"{self.host} has no {_what(path, repository)}: 404{said}"
        if answer.status == 400 and self.plain_http:
            return (f"{self.host} answered plain HTTP with 400: it probably speaks HTTPS "
                    "(leave out --plain-http)")
        return f"{self.host} answered {method} {_what(path, repository)} with {answer.status}{said}"


def _what(path: str, repository: str) -> str:
    if "/manifests/" in path:
        return f"{repository}:{path.rsplit('/', 1)[-1]}".replace(":sha256:", "@sha256:")
    if "/blobs/" in path and "/uploads/" not in path:
        return f"blob {path.rsplit('/', 1)[-1]} in {repository}"
    return path.split("?", 1)[0] if path.startswith("/") else f"an upload to {repository}"


def _source(credentials: Credentials | None) -> str:
    return f" from {credentials.source}" if credentials is not None else ""


def _error_text(body: bytes) -> str:
    """The registry's own words: the first of the spec's `errors`, else nothing."""
    try:
        errors = json.loads(body).get("errors") or []
        first = errors[0]
        text = f"{first.get('code', '')}: {first.get('message', '')}".strip(": ")
    except (ValueError, AttributeError, IndexError, TypeError):
        return ""
    return " ".join(text.split())[:200]


def _lower(headers) -> dict[str, str]:
    return {key.lower(): value for key, value in (headers or {}).items()}


class _NoAuthOnRedirect(urllib.request.HTTPRedirectHandler):
    """Follow a registry's redirect (to blob storage) without carrying its Authorization
    header to another host."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urllib.parse.urlsplit(newurl).netloc != \
                urllib.parse.urlsplit(req.full_url).netloc:
            new.remove_header("Authorization")
        return new

