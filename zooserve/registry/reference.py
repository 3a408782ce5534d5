"""An image reference as Docker and ORAS spell it: `[HOST[:PORT]/]REPOSITORY[:TAG][@DIGEST]`.

A first path component is a registry host when it holds a `.` or a `:`, or is `localhost`
(Docker's rule); otherwise the reference is on Docker Hub (`docker.io`, whose API lives at
registry-1.docker.io, with `library/` before a one-part name)."""

from __future__ import annotations

import re
from dataclasses import dataclass

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"

# The OCI distribution spec's grammar for repository names, tags and digests.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_DIGEST = re.compile(r"sha256:[a-f0-9]{64}")
_HOST = re.compile(r"(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
REFERENCE_MAX = 512


class BadReference(ValueError):
    """Not a reference; the message says which part is wrong."""


@dataclass(frozen=True)
class Reference:
    host: str  # as written (docker.io for Docker Hub)
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def api_host(self) -> str:
        """Where the registry's API answers."""
        return DOCKER_HUB_API if self.host == DOCKER_HUB else self.host

    @property
    def identifier(self) -> str:
        """What the manifest is asked for by: the digest when given, else the tag."""
        return self.digest or self.tag or "latest"

    def with_tag(self, tag: str) -> Reference:
        return Reference(self.host, self.repository, tag, None)

    def __str__(self) -> str:
        text = f"{self.host}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def parse_reference(text: str) -> Reference:
    """Read a reference, or raise BadReference naming what is wrong with it."""
    shown = text if len(text) <= 80 else text[:77] + "..."
    if not text or len(text) > REFERENCE_MAX or any(c.isspace() for c in text):
        raise BadReference(f"{shown!r} is not an image reference (HOST/REPOSITORY[:TAG])")
    rest, digest = text, None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not _DIGEST.fullmatch(digest):
            raise BadReference(f"{shown!r}: the digest after '@' must be sha256:<64 hex digits>")
    head, _, tail = rest.partition("/")
    if tail and ("." in head or ":" in head or head == "localhost"):
        host, path = head, tail
        if not _HOST.fullmatch(host):
            raise BadReference(f"{shown!r}: {host!r} is not a registry host[:port]")
    else:
        host, path = DOCKER_HUB, rest
    tag = None
    last_slash = path.rfind("/")
    colon = path.rfind(":")
    if colon > last_slash:
        path, tag = path[:colon], path[colon + 1:]
        if not _TAG.fullmatch(tag):
            raise BadReference(f"{shown!r}: {tag!r} is not a tag (letters, digits, '_', '.', "
                                 "'-'; at most 128)")
    if host == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    if not _REPOSITORY.fullmatch(path):
        raise BadReference(f"{shown!r}: {path!r} is not a repository name (lower-case letters, "
                             "digits and separators, components split by '/')")
    return Reference(host, path, tag, digest)
