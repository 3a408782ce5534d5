"""The server's settings: one object, read once from flags and `ZOOSERVE_*` environment
variables (flags win), then handed down. Containers set the environment; people use flags.

Each setting is declared once, as a field of `Settings`: its type, its default, how a raw value
becomes one (the `parse` of its `Setting`) and the words that say what it does. Its variable is
`ZOOSERVE_` and its name in capitals, its flag `--` and its name with dashes. From that one
declaration come `zooserve serve`'s flags (`add_flags`), the reading of flags and variables
(`Settings.from_sources`) and the README's table (`python -m zooserve.serving.settings
--markdown`; tests/test_settings_table.py holds the README to it)."""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path

DEVICES = ("auto", "cpu", "cuda", "tensorrt")
# How the model repository may change under a running server, as Triton's
# --model-control-mode: "none" (what was there at start), "explicit" (RepositoryModelLoad and
# RepositoryModelUnload), "poll" (the folder is rescanned every `poll_interval` seconds).
MODEL_CONTROL_MODES = ("none", "explicit", "poll")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
PREFIX = "ZOOSERVE_"

# How a raw value (a flag's text or a variable's) becomes a setting: (raw, source) -> value,
# where source is the flag or the variable it came from, for the one-line SettingsError.
Parse = Callable[[str, str], object]


class SettingsError(ValueError):
    """A setting that cannot be used; the message names the flag or variable."""


@dataclass(frozen=True)
class Setting:
    """What a `Settings` field declares beside its name, type and default."""

    parse: Parse
    help: str
    # The default as --help and the README write it, where the value itself would mislead
    # (one computed at run time, or None standing for "chosen elsewhere").
    shown: str | None = None
    # False: the variable alone (a secret that must stay out of `ps`).
    has_flag: bool = True
    # True: the flag may be given more than once; `parse` makes a tuple of each value, and
    # the values' tuples are joined (the variable holds them all, os.pathsep between).
    repeatable: bool = False


def setting(default: object = None, *, parse: Parse, help: str, shown: str | None = None,
            has_flag: bool = True, factory: Callable[[], object] | None = None,
            repr: bool = True, repeatable: bool = False) -> Field:
    """A `Settings` field carrying its `Setting` declaration."""
    declared = {"setting": Setting(parse, help, shown, has_flag, repeatable)}
    if factory is not None:
        return field(default_factory=factory, metadata=declared, repr=repr)
    return field(default=default, metadata=declared, repr=repr)


# The kinds of value. Each strips its text, but for a secret, taken as given.

def _text(raw: str, source: str) -> str:
    return raw.strip()


def _secret(raw: str, source: str) -> str:
    return raw


def _path(raw: str, source: str) -> Path:
    return Path(raw.strip())


def _optional_path(raw: str, source: str) -> Path | None:
    text = raw.strip()
    return Path(text) if text else None


class PathList(tuple):
    """Paths, written as their variable holds them: os.pathsep (`:` on Linux) between."""

    def __str__(self) -> str:
        return os.pathsep.join(map(str, self))


def _paths(raw: str, source: str) -> PathList:
    """Paths separated by os.pathsep, as PATH is written; empty ones dropped."""
    return PathList(Path(part.strip()) for part in raw.split(os.pathsep) if part.strip())


def _path_or_off(raw: str, source: str) -> Path | None:
    text = raw.strip()
    return None if text.lower() in {"off", "none"} else Path(text)


def _boolean(raw: str, source: str) -> bool:
    text = raw.strip()
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise SettingsError(f"{source}: expected true or false, got '{text}'")


def _one_of(options: tuple[str, ...], normal: Callable[[str], str] = str.lower) -> Parse:
    def parse(raw: str, source: str) -> str:
        text = raw.strip()
        if normal(text) not in options:
            raise SettingsError(f"{source}: must be one of {', '.join(options)}, got '{text}'")
        return normal(text)

    return parse


def _integer(text: str, source: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise SettingsError(f"{source}: expected an integer, got '{text}'") from None


def _port(raw: str, source: str) -> int:
    text = raw.strip()
    port = _integer(text, source)
    if not 0 <= port <= 65535:
        raise SettingsError(f"{source}: port must be between 0 and 65535, got {text}")
    return port


def _count(raw: str, source: str) -> int:
    text = raw.strip()
    value = _integer(text, source)
    if value < 1:
        raise SettingsError(f"{source}: must be at least 1, got {text}")
    return value


def _threads_or_auto(raw: str, source: str) -> int:
    text = raw.strip()
    if text.lower() == "auto":
        return 0
    value = _integer(text, source)
    if value < 0:
        raise SettingsError(
            f"{source}: must be 0 or auto (chosen from the CPU limit) "
            f"or a number of threads, got {text}"
        )
    return value


def _seconds(minimum: float = 0.0) -> Parse:
    def parse(raw: str, source: str) -> float:
        text = raw.strip()
        try:
            value = float(text)
        except ValueError:
            raise SettingsError(f"{source}: expected seconds, got '{text}'") from None
        if not 0 <= value <= 3600:
            raise SettingsError(f"{source}: must be between 0 and 3600 seconds, got {text}")
        if value < minimum:
            raise SettingsError(f"{source}: must be at least {minimum:g} seconds, got {text}")
        return value

    return parse


def _or(options: Iterable[str]) -> str:
    *rest, last = options
    return f"{', '.join(rest)} or {last}"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "zooserve" / "onnxruntime"


@dataclass(frozen=True)
class Settings:
    models: Path = setting(Path("models"), parse=_path, help="model repository folder")
    host: str = setting("127.0.0.1", parse=_text, help="address to listen on")
    grpc_port: int = setting(8001, parse=_port, help="gRPC port")
    # None: 8000 for `zooserve serve` (as Triton), 3000 for the Bento (as BentoML).
    http_port: int | None = setting(
        None, parse=_port, shown="8000",
        help="HTTP port, KServe v2 REST (the Bento's default: 3000)")
    metrics_port: int = setting(
        8002, parse=_port, help="Prometheus metrics port, HTTP (as Triton's)")
    device: str = setting(
        "auto", parse=_one_of(DEVICES), help=f"where models run: {_or(DEVICES)}")
    max_batch_size: int = setting(
        1024, parse=_count,
        help="largest batch accepted, unless a model's serving.json sets its own")
    log_level: str = setting(
        "INFO", parse=_one_of(LOG_LEVELS, str.upper), help=f"log level: {_or(LOG_LEVELS)}")
    inference_threads: int = setting(
        4, parse=_count,
        help="threads running requests at once, for runs dearer than a thread hand-off "
        "(ONNX Runtime releases the GIL)")
    # 0: chosen from the CPU limit and inference_threads
    # (zooserve.serving.cpus.auto_intra_op_threads).
    ort_threads: int = setting(
        0, parse=_threads_or_auto, shown="auto",
        help="ONNX Runtime threads per model; 0 or auto: from the CPU limit")
    drain_timeout: float = setting(
        30.0, parse=_seconds(),
        help="on SIGTERM, seconds to finish the requests in flight before closing anyway")
    # So load balancers notice before anything is refused.
    drain_delay: float = setting(
        3.0, parse=_seconds(),
        help="on SIGTERM, seconds health reads NOT_SERVING while requests are still taken")
    # Off: ready when some model serves (a model that failed is still reported, by
    # ModelReady, the index and its own health name).
    require_all_models: bool = setting(
        False, parse=_boolean, help="true: not ready unless every model version loaded")
    # Admission control: requests taken on and not yet answered, in this process.
    max_inflight: int = setting(
        1024, parse=_count,
        help="inference requests in flight at once, all models; beyond it RESOURCE_EXHAUSTED")
    max_queue_size: int = setting(
        256, parse=_count,
        help="each model's requests waiting to run (taken on, not yet running), unless its "
        "serving.json says; beyond it RESOURCE_EXHAUSTED")
    max_request_bytes: int = setting(
        64 * 1024 * 1024, parse=_count, help="largest gRPC message or HTTP body, in bytes")
    # HTTP connections (zooserve/serving/http_frontend/connection.py). The idle timeout is
    # longer than the 60 s of common load balancers, as nginx's 75 s keep-alive, so the
    # balancer closes first.
    http_header_timeout: float = setting(
        10.0, parse=_seconds(0.1),
        help="seconds from an HTTP request's first byte to the end of its head; beyond it 408")
    http_body_timeout: float = setting(
        30.0, parse=_seconds(0.1),
        help="seconds to wait for the next piece of an HTTP body; beyond it 408")
    http_idle_timeout: float = setting(
        75.0, parse=_seconds(0.1),
        help="seconds an HTTP connection with no request in progress stays open")
    http_max_connections: int = setting(
        1000, parse=_count, help="HTTP connections open at once per process; beyond it 503")
    # All connections together, from before a body is read until its request is answered
    # (a Content-Length is reserved before the body is read).
    http_body_buffer_bytes: int = setting(
        256 * 1024 * 1024, parse=_count,
        help="bytes of HTTP bodies held at once per process, at least --max-request-bytes; "
        "beyond it 503")
    model_control: str = setting(
        "none", parse=_one_of(MODEL_CONTROL_MODES),
        help="none, explicit (load/unload RPCs) or poll (rescan the folder)")
    poll_interval: float = setting(
        5.0, parse=_seconds(0.1), help="seconds between rescans with --model-control poll")
    # TLS for gRPC and HTTP.
    tls_cert: Path | None = setting(
        parse=_optional_path, help="TLS certificate, PEM (with --tls-key: gRPC and HTTP over TLS)")
    tls_key: Path | None = setting(parse=_optional_path, help="TLS private key, PEM")
    tls_client_ca: Path | None = setting(
        parse=_optional_path, help="CA whose client certificates are required (mutual TLS)")
    # Bearer-token authentication on every RPC and HTTP route but health.
    auth_token_file: Path | None = setting(
        parse=_optional_path,
        help="file holding the bearer token every call but health must carry (a mounted "
        "secret), or the token itself in ZOOSERVE_AUTH_TOKEN")
    auth_token: str | None = setting(
        parse=_secret, has_flag=False, repr=False,
        help="the bearer token itself, if no token file; no flag, so it stays out of `ps`")
    reflection: bool = setting(
        True, parse=_boolean,
        help="true: gRPC server reflection (grpcurl and friends list the services)")
    # `--workers` shares the ports between its own workers regardless.
    reuse_port: bool = setting(
        False, parse=_boolean,
        help="true: let other processes share the ports (SO_REUSEPORT)")
    # zooserve.serving.onnx_sessions, optimized_model_cache; None: optimise at every start.
    cache_dir: Path | None = setting(
        factory=lambda: default_cache_dir(), parse=_path_or_off,
        shown="~/.cache/zooserve/onnxruntime",
        help="folder for ONNX Runtime's optimised graphs, under $XDG_CACHE_HOME if set; "
        "off: optimise at every start")
    # zooserve.repository.signing; checked and folders expanded once, at start
    # (load_options.signature_keys). Empty: versions load whether signed or not.
    verify_key: PathList = setting(
        PathList(), parse=_paths, shown="", repeatable=True,
        help="public key (PEM), or a folder of .pem keys: serve only versions whose model.sig "
        "verifies against one of them; the others are UNAVAILABLE with the reason "
        "(repeatable; the variable separates paths with ':')")
    # zooserve.serving.workers; 1: one process, no sharing.
    workers: int = setting(
        1, parse=_count,
        help="worker processes sharing the gRPC and HTTP ports, each with its own models")

    @classmethod
    def from_sources(
        cls, flags: Mapping[str, object] | None = None, environ: Mapping[str, str] | None = None
    ) -> Settings:
        """Defaults, overridden by ZOOSERVE_<NAME> variables, overridden by flags that are set."""
        flags = flags or {}
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for one in declared():
            if flags.get(one.name) is not None:
                raw, source = flags[one.name], one.flag or one.name
            elif environ.get(one.variable, "") != "":
                raw, source = environ[one.variable], one.variable
            else:
                continue
            if one.repeatable and isinstance(raw, list | tuple):  # the flag given N times
                values[one.name] = PathList(item for each in raw
                                            for item in one.parse(str(each), source))
            else:
                values[one.name] = one.parse(str(raw), source)
        settings = cls(**values)
        if settings.http_body_buffer_bytes < settings.max_request_bytes:
            buffer = named("http_body_buffer_bytes")
            raise SettingsError(
                f"http_body_buffer_bytes ({settings.http_body_buffer_bytes}) must be at least "
                f"max_request_bytes ({settings.max_request_bytes}), or the largest body allowed "
                f"could never be read ({buffer.flag} / {buffer.variable})"
            )
        return settings


@dataclass(frozen=True)
class Declared:
    """One setting as the parser, the reader and the README see it."""

    name: str
    variable: str
    flag: str | None
    default: str  # as written; "" when there is none
    help: str
    parse: Parse
    repeatable: bool = False

    def help_line(self) -> str:
        """The flag's --help: what it does, then [variable, default]."""
        where = f"{self.variable}, {self.default}" if self.default else self.variable
        return f"{self.help} [{where}]"


@functools.cache
def declared() -> tuple[Declared, ...]:
    """Every setting, in the order of the Settings fields."""
    return tuple(_declared(f) for f in fields(Settings))


def named(name: str) -> Declared:
    return next(one for one in declared() if one.name == name)


def _declared(f: Field) -> Declared:
    one: Setting = f.metadata["setting"]
    return Declared(
        name=f.name,
        variable=PREFIX + f.name.upper(),
        flag="--" + f.name.replace("_", "-") if one.has_flag else None,
        default=one.shown if one.shown is not None else _written(f.default),
        help=one.help,
        parse=one.parse,
        repeatable=one.repeatable,
    )


def _written(value: object) -> str:
    if value is None or value is MISSING:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def add_flags(parser: argparse.ArgumentParser, names: Iterable[str] | None = None) -> None:
    """A flag for each setting that has one (or for those named), left None when not given so
    `Settings.from_sources` can tell it from the variable."""
    wanted = None if names is None else set(names)
    for one in declared():
        if one.flag and (wanted is None or one.name in wanted):
            parser.add_argument(one.flag, dest=one.name,
                                action="append" if one.repeatable else "store",
                                help=one.help_line().replace("%", "%%"))


# The README's table of server settings lies between these lines.
TABLE_START = ("<!-- settings table: made by `python -m zooserve.serving.settings --markdown`; "
               "do not edit by hand -->")
TABLE_END = "<!-- end of the settings table -->"


def markdown_table() -> str:
    """Every setting as a Markdown table: flag, variable, default, what it does."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    rows = ["| flag | environment variable | default | what it does |", "|---|---|---|---|"]
    for one in declared():
        flag = f"`{one.flag}`" if one.flag else "(none)"
        default = f"`{cell(one.default)}`" if one.default else "(none)"
        rows.append(f"| {flag} | `{one.variable}` | {default} | {cell(one.help)} |")
    return "\n".join(rows) + "\n"


def with_table(readme: str) -> str:
    """The README text with the table between its markers made anew."""
    head, start, rest = readme.partition(TABLE_START + "\n")
    _, end, tail = rest.partition(TABLE_END)
    if not start or not end:
        raise ValueError(f"the README lacks the lines {TABLE_START!r} and {TABLE_END!r}")
    return head + start + markdown_table() + end + tail


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m zooserve.serving.settings",
        description="the server settings' table, from their declarations")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--markdown", action="store_true", help="print the table")
    what.add_argument("--readme", type=Path, help="rewrite the table in this README in place")
    args = parser.parse_args(argv)
    if args.markdown:
        sys.stdout.write(markdown_table())
    else:
        args.readme.write_text(with_table(args.readme.read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
