"""The credentials `zooserve push` and `zooserve pull` present to a registry, found where
Docker's own tools keep them, so that a `docker login` (or a Kubernetes pull secret mounted as
a Docker config) is all a user needs:

1. ZOOSERVE_REGISTRY_USERNAME and ZOOSERVE_REGISTRY_PASSWORD, for any registry;
2. `config.json` in $DOCKER_CONFIG (else ~/.docker): its credential helper for the host
   (`credHelpers`, else `credsStore`), else its `auths` entry (`auth`, or `username` and
   `password`, or an `identitytoken`).

None found: the request goes without, and a registry that wants some says so (401)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

USERNAME_VARIABLE = "ZOOSERVE_REGISTRY_USERNAME"
PASSWORD_VARIABLE = "ZOOSERVE_REGISTRY_PASSWORD"


class CredentialsError(ValueError):
    """A credentials source exists and cannot be read; the message names it."""


@dataclass(frozen=True, repr=False)
class Credentials:
    username: str
    password: str  # or, with identity_token, unused
    identity_token: str | None = None  # an OAuth2 refresh token (Docker's identitytoken)
    source: str = ""  # where they came from, for messages: never the secret itself

    def __repr__(self) -> str:  # never print the secret
        return f"Credentials({self.username!r} from {self.source})"


def docker_config_file() -> Path:
    folder = os.environ.get("DOCKER_CONFIG")
    return Path(folder) / "config.json" if folder else Path.home() / ".docker" / "config.json"


def find_credentials(host: str) -> Credentials | None:
    """The credentials for `host` (host[:port] as the reference spells it), or None."""
    username = os.environ.get(USERNAME_VARIABLE)
    password = os.environ.get(PASSWORD_VARIABLE)
    if username is not None or password is not None:
        if not username or password is None:
            raise CredentialsError(f"set both {USERNAME_VARIABLE} and {PASSWORD_VARIABLE}, "
                                   "or neither")
        return Credentials(username, password, source=USERNAME_VARIABLE)
    path = docker_config_file()
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CredentialsError(f"cannot read {path}: {exc}") from None
    if not isinstance(config, dict):
        raise CredentialsError(f"{path} is not a JSON object")
    keys = _config_keys(host)
    helpers = config.get("credHelpers") or {}
    for key in keys:
        if isinstance(helpers, dict) and isinstance(helpers.get(key), str):
            return _from_helper(helpers[key], key, path)
    auths = config.get("auths") or {}
    for key in keys:
        entry = auths.get(key) if isinstance(auths, dict) else None
        if isinstance(entry, dict) and (found := _from_entry(entry, key, path)):
            return found
    if isinstance(config.get("credsStore"), str):
        return _from_helper(config["credsStore"], keys[0], path)
    return None


def _config_keys(host: str) -> list[str]:
    """The `auths` keys Docker might have written for host."""
    if host in ("docker.io", "registry-1.docker.io", "index.docker.io"):
        return ["https://index.docker.io/v1/", "docker.io", "index.docker.io",
                "registry-1.docker.io"]
    return [host, f"https://{host}", f"http://{host}", f"https://{host}/v1/"]


def _from_entry(entry: dict, key: str, path: Path) -> Credentials | None:
    source = f"{path} ({key})"
    if entry.get("identitytoken"):
        return Credentials("<token>", "", str(entry["identitytoken"]), source)
    if entry.get("auth"):
        try:
            username, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            raise CredentialsError(f"{source}: 'auth' is not base64 of user:password") from None
        return Credentials(username, password, source=source)
    if entry.get("username") and "password" in entry:
        return Credentials(str(entry["username"]), str(entry["password"]), source=source)
    return None


def _from_helper(helper: str, host: str, path: Path) -> Credentials | None:
    """Ask `docker-credential-<helper> get`, as Docker does."""
    program = f"docker-credential-{helper}"
    try:
        done = subprocess.run([program, "get"], input=host, capture_output=True, text=True,
                              timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CredentialsError(f"{path} names the credential helper {program}, which "
                               f"cannot run: {exc}") from None
    if done.returncode != 0:
        return None  # the helper has nothing for this host
    try:
        answer = json.loads(done.stdout)
        username, secret = str(answer["Username"]), str(answer["Secret"])
    except (ValueError, KeyError, TypeError):
        raise CredentialsError(f"{program} answered something that is not its JSON") from None
    source = f"{program} ({host})"
    if username == "<token>":
        return Credentials(username, "", secret, source)
    return Credentials(username, secret, source=source)
