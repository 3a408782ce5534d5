"""The CPU limit zooserve sizes ONNX Runtime's threads from: the cgroup quota (v2 and v1)
against the CPU affinity, read from fake cgroup trees laid out as Linux lays them out, and
once from this machine's own."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from zooserve.serving.cpus import auto_intra_op_threads, detect_cpu_limit


def tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


V2_CONTAINER = {"proc/self/cgroup": "0::/\n", "sys/fs/cgroup/cgroup.controllers": "cpu memory\n"}


@pytest.mark.parametrize("cpu_max, affinity, cores, quota", [
    ("150000 100000\n", 16, 2, 1.5),   # 1.5 cores: rounded up to whole cores
    ("50000 100000\n", 16, 1, 0.5),    # under one core still runs one thread
    ("400000 100000\n", 2, 2, 4.0),    # the affinity is smaller: it wins
    ("max 100000\n", 8, 8, None),      # no quota: the affinity
    ("garbage\n", 3, 3, None),         # unreadable: ignored
])  # fmt: skip
def test_cgroup_v2_quota_against_affinity(tmp_path, cpu_max, affinity, cores, quota):
    root = tree(tmp_path, {**V2_CONTAINER, "sys/fs/cgroup/cpu.max": cpu_max})
    limit = detect_cpu_limit(root, affinity=affinity)
    assert (limit.cores, limit.quota, limit.affinity) == (cores, quota, affinity)


def test_cgroup_v2_tightest_of_the_process_cgroup_and_its_ancestors(tmp_path):
    # No cgroup namespace: /proc/self/cgroup names the full path; a parent's quota binds.
    pod = "sys/fs/cgroup/kubepods.slice/pod1"
    root = tree(tmp_path, {
        "proc/self/cgroup": "0::/kubepods.slice/pod1/container1\n",
        f"{pod}/cpu.max": "300000 100000\n",
        f"{pod}/container1/cpu.max": "max 100000\n",
    })  # fmt: skip
    limit = detect_cpu_limit(root, affinity=16)
    assert (limit.cores, limit.quota) == (3, 3.0)
    assert limit.source.endswith("kubepods.slice/pod1/cpu.max")
    assert "cgroup quota 3 cores" in limit.describe()


@pytest.mark.parametrize("folder", ["cpu", "cpu,cpuacct"])
def test_cgroup_v1_quota_over_period(tmp_path, folder):
    root = tree(tmp_path, {
        "proc/self/cgroup": "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n0::/\n",
        f"sys/fs/cgroup/{folder}/cpu.cfs_quota_us": "250000\n",
        f"sys/fs/cgroup/{folder}/cpu.cfs_period_us": "100000\n",
    })  # fmt: skip
    # The host's path (/docker/abc) is not under a container's own mount: its root is read.
    limit = detect_cpu_limit(root, affinity=16)
    assert (limit.cores, limit.quota) == (3, 2.5)


def test_cgroup_v1_without_quota_and_no_cgroup_at_all(tmp_path):
    v1 = tree(tmp_path / "v1", {
        "proc/self/cgroup": "1:cpu:/\n",
        "sys/fs/cgroup/cpu/cpu.cfs_quota_us": "-1\n",
        "sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000\n",
    })  # fmt: skip
    assert detect_cpu_limit(v1, affinity=6).cores == 6
    bare = tmp_path / "bare"
    bare.mkdir()
    limit = detect_cpu_limit(bare, affinity=4)
    assert (limit.cores, limit.quota) == (4, None)
    assert limit.describe() == "4 (CPU affinity 4; no cgroup CPU quota)"


def test_this_machine():
    limit = detect_cpu_limit()
    assert 1 <= limit.cores <= len(os.sched_getaffinity(0))


@pytest.mark.parametrize("cores, inference_threads, threads", [
    (1, 4, 1), (2, 4, 1), (4, 4, 1), (8, 4, 2), (16, 4, 4), (16, 1, 16),
])  # fmt: skip
def test_auto_threads_share_the_limit_among_the_inference_threads(
    cores, inference_threads, threads
):
    assert auto_intra_op_threads(cores, inference_threads) == threads
