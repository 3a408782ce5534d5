"""ONNX Runtime sessions: which execution providers (devices) a session gets, CUDA's
libraries loaded before the first CUDA session, zooserve's thread and graph settings, and the
cache of optimised graphs kept between starts. Everything here speaks ONNX Runtime; what a
served model does with its session is `zooserve.serving.loaded_model`."""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import platform
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from zooserve.protocol.errors import one_line
from zooserve.repository import layout
from zooserve.serving.onnx_files import external_data_locations

if TYPE_CHECKING:  # onnxruntime is imported where a session is made, not to read this module
    import onnxruntime as ort

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"

SessionFactory = Callable[[str, list[str], int], "ort.InferenceSession"]

# The words an operator reads in a one-line startup error about the device.
CUDA_SETTING = "--device cuda (ZOOSERVE_DEVICE=cuda)"
TENSORRT_SETTING = "--device tensorrt (ZOOSERVE_DEVICE=tensorrt)"


class DeviceUnavailable(RuntimeError):
    """The settings insist on a device (`cuda`) that this machine cannot give. Unlike a
    broken model file, this stops the server from starting: serving on the CPU instead
    would be slower than the operator planned for, and nobody would notice."""


def _create_session(
    path: str, providers: list[str], intra_op_threads: int = 0, cache_dir: Path | None = None
):
    """An ONNX Runtime session with zooserve's thread and graph settings.

    `intra_op_threads` counts the calling thread (1: no pool at all; 0: ONNX Runtime's
    default, as wide as the host). Inter-op threads serve only the parallel execution
    mode, which zooserve does not use: pinned to 1 so no second pool is made. Where a pool
    exists its threads do not spin while they wait for work: zooserve runs several sessions
    side by side on its inference threads, and a spinning pool takes cores (and a
    container's CPU quota) from the requests running on them; this holds for CUDA sessions
    too, whose pool only serves the few nodes left on the CPU.

    Every graph optimisation is on (ORT_ENABLE_ALL, ONNX Runtime's default, set here so it
    is a decision). With `cache_dir`, the optimised graph is kept there and later sessions
    load it with optimisation off: see `optimized_model_cache`."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if intra_op_threads > 0:
        options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    if intra_op_threads != 1:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    cached, fresh = optimized_model_cache(cache_dir, Path(path), providers)
    if cached is not None:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        try:
            return ort.InferenceSession(str(cached), sess_options=options, providers=providers)
        except Exception as exc:  # a damaged cache entry costs one optimisation, no more
            log.warning("ignoring the cached optimised model %s: %s", cached, one_line(exc))
            cached.unlink(missing_ok=True)
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if fresh is not None:
        # Written beside the cache and renamed into place once whole, so a session never
        # loads half a file; warnings only, as ONNX Runtime warns that the optimised graph
        # suits this machine, which the cache key already says.
        options.optimized_model_filepath = str(fresh.with_suffix(f".{os.getpid()}.tmp"))
        options.log_severity_level = 3
    session = ort.InferenceSession(path, sess_options=options, providers=providers)
    if fresh is not None:
        written = Path(options.optimized_model_filepath)
        try:
            written.replace(fresh)
        except OSError as exc:
            log.warning("could not cache the optimised model at %s: %s", fresh, exc)
            written.unlink(missing_ok=True)
    return session


def optimized_model_cache(
    cache_dir: Path | None, model: Path, providers: Sequence[str]
) -> tuple[Path | None, Path | None]:
    """(the cached optimised model to load, or None; where to write one, or None).

    ONNX Runtime's fully optimised graph may use this CPU's instruction set and the chosen
    providers' fused kernels, so the key holds the model's bytes (with those of its external
    data, which the optimised graph holds inline), the onnxruntime version,
    the providers and the CPU's feature flags: a copied cache or a changed model is never
    reused. TensorRT builds its own engines and is not cached here. An unusable cache
    folder means no cache, with one warning."""
    if cache_dir is None or any("Tensorrt" in p for p in providers):
        return None, None
    import onnxruntime as ort

    key = hashlib.sha256()
    try:
        weights = [f"{name}={layout.sha256_of_file(model.parent / name)}"
                   for name in external_data_locations(model)]
    except (OSError, ValueError):  # not ONNX, or its data missing: ONNX Runtime says which
        return None, None
    for part in (layout.sha256_of_file(model), *weights, ort.__version__, ",".join(providers),
                 _cpu_flags()):
        key.update(part.encode() + b"\0")
    entry = cache_dir / f"{key.hexdigest()[:32]}.onnx"
    if entry.is_file():
        return entry, None
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        log.warning("no optimised-model cache: cannot create %s: %s", cache_dir, exc)
        return None, None
    if not os.access(cache_dir, os.W_OK):
        log.warning("no optimised-model cache: %s is not writable", cache_dir)
        return None, None
    return None, entry


@functools.cache
def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


@functools.cache
def prepare_cuda() -> str:
    """Load the CUDA and cuDNN libraries that onnxruntime-gpu's pip wheels (`nvidia-*`)
    install, once, before the first CUDA session: ONNX Runtime's CUDA provider library
    carries no search path to them, so without this it cannot find them and the provider
    is dropped. Builds without `preload_dlls` (older than 1.21) are left alone. Returns
    what went wrong, or "" (the caller decides whether that is fatal)."""
    import onnxruntime as ort

    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        log.info("onnxruntime %s has no preload_dlls; relying on the library path", ort.__version__)
        return ""
    try:
        preload()
    except Exception as exc:  # a missing wheel must not stop a CPU fallback under `auto`
        problem = f"onnxruntime.preload_dlls() failed: {one_line(exc)}"
        log.warning("%s", problem)
        return problem
    log.info("onnxruntime.preload_dlls() done: CUDA and cuDNN from the nvidia wheels, if any")
    return ""


def open_session(
    path: Path,
    device: str,
    available: Sequence[str] | None = None,
    create: SessionFactory | None = None,
    intra_op_threads: int = 0,
    prepare: Callable[[], str] | None = None,
    cache_dir: Path | None = None,
) -> ort.InferenceSession:
    """Create a session on the device the settings ask for (with zooserve's settings and
    the optimised-model cache in `cache_dir`, unless `create` makes it).

    `auto` tries CUDA when this onnxruntime build has it and falls back to the CPU when the
    CUDA provider cannot really be created (no GPU, no driver): ONNX Runtime then silently
    drops it, so the providers are read back from the session, never from
    `get_available_providers()`, which lists what the build has, not what works. `cuda`
    insists on CUDA: without it, DeviceUnavailable with a one-line reason. `prepare` runs
    before the first CUDA session (`prepare_cuda`; tests pass their own).
    """
    if available is None:
        import onnxruntime as ort

        available = ort.get_available_providers()
    available = list(available)
    create = create or functools.partial(_create_session, cache_dir=cache_dir)
    if device == "tensorrt":
        return _open_tensorrt_session(path, available, create, intra_op_threads, prepare)
    if device == "cpu" or (device == "auto" and CUDA not in available):
        return create(str(path), [CPU], intra_op_threads)
    if device == "cuda" and CUDA not in available:
        raise DeviceUnavailable(
            f"{CUDA_SETTING}: this onnxruntime build has no CUDA provider (it has "
            f"{', '.join(available)}); install the `gpu` extra (onnxruntime-gpu) instead of "
            "`serve`, or use --device auto"
        )
    preload_problem = (prepare or prepare_cuda)()
    try:
        session = create(str(path), [CUDA, CPU], intra_op_threads)
    except Exception as exc:
        # Either CUDA failed loudly or the file is broken: the CPU tells which.
        cpu_session = create(str(path), [CPU], intra_op_threads)  # raises for a broken file
        if device == "cuda":
            raise DeviceUnavailable(
                f"{CUDA_SETTING}: the CUDA provider failed for {path}: {one_line(exc)}"
            ) from None
        log.warning("CUDA provider failed for %s (%s); using the CPU", path, one_line(exc))
        return cpu_session
    if CUDA not in session.get_providers():
        if device == "cuda":
            why = preload_problem or "ONNX Runtime's own error above says why"
            raise DeviceUnavailable(
                f"{CUDA_SETTING}: ONNX Runtime could not create the CUDA provider for {path} "
                f"(no GPU visible, driver too old, or CUDA/cuDNN libraries missing; {why})"
            )
        log.warning("CUDA provider unavailable at run time for %s; using the CPU", path)
    return session


def _open_tensorrt_session(
    path: Path,
    available: list[str],
    create: SessionFactory,
    intra_op_threads: int,
    prepare: Callable[[], str] | None,
) -> ort.InferenceSession:
    """`tensorrt` insists on TensorRT, with CUDA and then the CPU for the nodes TensorRT
    does not take (ONNX Runtime assigns each node to the first provider that can run it).
    TensorRT builds an engine per input shape on first use, so the warm-up's shapes start
    fast and others pay once; its engines are not in zooserve's optimised-model cache."""
    if TENSORRT not in available:
        raise DeviceUnavailable(
            f"{TENSORRT_SETTING}: this onnxruntime build has no TensorRT provider (it has "
            f"{', '.join(available)}); TensorRT needs onnxruntime-gpu with the TensorRT "
            "libraries installed"
        )
    preload_problem = (prepare or prepare_cuda)()
    try:
        session = create(str(path), [TENSORRT, CUDA, CPU], intra_op_threads)
    except Exception as exc:
        raise DeviceUnavailable(
            f"{TENSORRT_SETTING}: the TensorRT provider failed for {path}: {one_line(exc)}"
        ) from None
    if TENSORRT not in session.get_providers():
        why = preload_problem or "ONNX Runtime's own error above says why"
        raise DeviceUnavailable(
            f"{TENSORRT_SETTING}: ONNX Runtime could not create the TensorRT provider for "
            f"{path} (TensorRT libraries missing or no GPU; {why})"
        )
    return session


def device_of(providers: Sequence[str]) -> str:
    """GPU when the CUDA or TensorRT provider is in use, else CPU (Triton's instance kinds)."""
    return "GPU" if CUDA in providers or TENSORRT in providers else "CPU"


def shrink_arena_options(device: str) -> ort.RunOptions:
    """Run options that make ONNX Runtime's arenas on `device` (CPU or GPU) give back what a
    run grew them by, for the large runs (`LoadedModel.execute`)."""
    import onnxruntime as ort

    options = ort.RunOptions()
    arenas = "cpu:0;gpu:0" if device == "GPU" else "cpu:0"
    options.add_run_config_entry("memory.enable_memory_arena_shrinkage", arenas)
    return options
