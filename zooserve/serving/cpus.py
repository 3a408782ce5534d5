"""How many CPU cores this process may really use, and how many ONNX Runtime threads to give
each session.

A container sees the host's cores (`os.cpu_count()`), but its CPU limit is a CFS quota in
its cgroup; running more busy threads than the quota allows only gets the process throttled.
ONNX Runtime sizes each session's thread pool to the host's physical cores, so zooserve
chooses the count itself."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

CGROUP_MOUNT = Path("sys/fs/cgroup")
# cgroup v1 mounts the cpu controller under one of these names (distributions differ).
V1_CPU_FOLDERS = ("cpu", "cpu,cpuacct", "cpuacct,cpu")


@dataclass(frozen=True)
class CpuLimit:
    cores: int  # whole cores this process may use, at least 1
    quota: float | None  # cores the cgroup quota allows (may be fractional); None: no quota
    affinity: int  # CPUs the scheduler lets this process run on
    source: str  # where the quota came from, for the log

    def describe(self) -> str:
        if self.quota is None:
            return f"{self.cores} (CPU affinity {self.affinity}; no cgroup CPU quota)"
        return (
            f"{self.cores} (cgroup quota {self.quota:g} cores from {self.source}, "
            f"CPU affinity {self.affinity})"
        )


def detect_cpu_limit(root: Path = Path("/"), affinity: int | None = None) -> CpuLimit:
    """The smaller of the cgroup CPU quota and the CPU affinity, rounded up to whole cores.

    `root` is the filesystem root to read `sys/fs/cgroup` and `proc/self/cgroup` under
    (tests pass a fake tree). Both cgroup v2 (`cpu.max`) and v1 (`cpu.cfs_quota_us` over
    `cpu.cfs_period_us`) are read; only the hierarchy that holds the cpu controller has
    those files. The process's own cgroup and each of its ancestors are read and the
    tightest quota wins, because a parent's limit binds its children too; inside a
    container the cgroup namespace makes the mount point itself the container's cgroup."""
    if affinity is None:
        affinity = _affinity()
    quota, source = None, ""
    for path, cores in _quotas(root):
        if quota is None or cores < quota:
            quota, source = cores, str(path)
    limit = affinity if quota is None else min(affinity, math.ceil(quota))
    return CpuLimit(max(1, limit), quota, affinity, source)


def _affinity() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def _quotas(root: Path):
    """(file, cores) for every CPU quota set on this process's cgroup or its ancestors."""
    mount = root / CGROUP_MOUNT
    own = _own_cgroups(root)
    for folder in _ancestors(mount, own.get("", "/")):
        cores = _v2_quota(folder / "cpu.max")
        if cores is not None:
            yield folder / "cpu.max", cores
    v1_path = own.get("cpu", "/")
    for name in V1_CPU_FOLDERS:
        for folder in _ancestors(mount / name, v1_path):
            cores = _v1_quota(folder / "cpu.cfs_quota_us", folder / "cpu.cfs_period_us")
            if cores is not None:
                yield folder / "cpu.cfs_quota_us", cores


def _own_cgroups(root: Path) -> dict[str, str]:
    """This process's cgroup path per controller, from /proc/self/cgroup: "" is the v2
    hierarchy, "cpu" the v1 cpu controller."""
    paths: dict[str, str] = {}
    try:
        lines = (root / "proc/self/cgroup").read_text().splitlines()
    except OSError:
        return paths
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            paths[""] = path
        elif "cpu" in controllers.split(","):
            paths["cpu"] = path
    return paths


def _ancestors(mount: Path, cgroup_path: str) -> list[Path]:
    """The folders from the process's cgroup up to the mount point. Where /proc/self/cgroup
    names a path the mount does not have (a container without its own cgroup namespace
    sees the host's path), only the mount point itself is left."""
    folders = [mount]
    current = mount
    for part in [p for p in cgroup_path.split("/") if p and p not in (".", "..")]:
        current = current / part
        folders.append(current)
    return [f for f in folders if f.is_dir()]


def _v2_quota(path: Path) -> float | None:
    # "max 100000" (no limit) or "<quota> <period>", both in microseconds.
    try:
        fields = path.read_text().split()
    except OSError:
        return None
    if len(fields) != 2 or fields[0] == "max":
        return None
    return _ratio(fields[0], fields[1])


def _v1_quota(quota_path: Path, period_path: Path) -> float | None:
    # cfs_quota_us is -1 when no limit is set.
    try:
        quota, period = quota_path.read_text().strip(), period_path.read_text().strip()
    except OSError:
        return None
    return _ratio(quota, period)


def _ratio(quota: str, period: str) -> float | None:
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    if q <= 0 or p <= 0:
        return None
    return q / p


def auto_intra_op_threads(cores: int, inference_threads: int) -> int:
    """ONNX Runtime intra-op threads per session when `ort_threads` is 0 (auto):
    the CPU limit shared among the inference threads, at least 1.

    Every session run happens on one of the DataPlane's `inference_threads` worker threads,
    so at most that many sessions run at once however many models are loaded; a session's
    intra-op count includes the thread that calls it. Giving each `cores //
    inference_threads` keeps the busy threads at most the CPU limit when every worker is
    running (or at most `inference_threads` when there are fewer cores than workers), instead
    of ONNX Runtime's default of one pool as wide as the host per session. The idle pools of
    models that are not running cost no CPU, because spinning is turned off where a pool
    exists (see `runtime._create_session`).

    On small containers (2 cores, 4 inference threads) this is 1: no pool at all, and
    concurrency comes from requests running side by side, which issue 8 measured at 1.6x the
    throughput of ORT's default on the digits CNN at concurrency 8, with half the CPU per
    request. On a large CPU limit each session gets a share of it, so one request of a large
    model can still use several cores when the server is not busy."""
    return max(1, cores // max(1, inference_threads))
