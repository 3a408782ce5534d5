"""The process's own memory: large buffers go back to the operating system when freed.

Requests and their arrays are large (a batch of images is hundreds of KiB) and short-lived.
glibc's malloc serves blocks from 128 KiB up with mmap, which returns them to the system on
free, but it raises that threshold as such blocks are freed (up to 32 MiB), after which they
come from the heap, which it rarely shrinks: after a flood of 2,000 digits requests the server
kept 880 MiB of a 1.4 GiB peak. Pinning the threshold at 128 KiB (`mallopt`, as the
MALLOC_MMAP_THRESHOLD_ variable would) keeps large buffers on mmap, so the memory goes back
after the flood; `benchmarks/memory.py` measures both. The small pieces freed in the middle
of malloc's heaps stay with the process whatever the threshold: `IdleTrimmer` hands them back
once the process goes quiet. Elsewhere than glibc this does nothing."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
LARGE_BUFFER_BYTES = 128 * 1024


def return_large_buffers_to_the_system() -> bool:
    """Pin glibc's mmap threshold at LARGE_BUFFER_BYTES, unless MALLOC_MMAP_THRESHOLD_ already
    says otherwise; True when it was set here."""
    if os.environ.get("MALLOC_MMAP_THRESHOLD_"):
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    if mallopt(M_MMAP_THRESHOLD, LARGE_BUFFER_BYTES) != 1:
        log.debug("mallopt(M_MMAP_THRESHOLD) refused; memory as malloc decides")
        return False
    return True


# What the idle trimmer looks for: a second in which the process used under a quarter of a
# core, with RSS at least this much above the lowest it has been. A trim that hands back
# less than a mebibyte doubles the wait before the next, up to MAX_WAIT_S.
IDLE_INTERVAL_S = 1.0
IDLE_CPU_FRACTION = 0.25
TRIM_GROWTH_BYTES = 8 * 1024 * 1024
MAX_WAIT_S = 4.0


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class IdleTrimmer:
    """Hands the free memory malloc's heaps hold back to the system once the process goes
    quiet (`malloc_trim(0)`, on its own thread: ctypes lets go of the GIL for it).

    The mmap threshold only covers large buffers. gRPC's core allocates per call in small
    pieces, on its own threads, each with its own malloc arena; after a flood of calls
    (84,000 started and cancelled: `benchmarks/cancel_flood.py`) those arenas held 220 MiB
    of free chunks scattered among live ones, which free() never returns: RSS stayed at
    2.6x its idle figure until traffic reused them. malloc_trim releases every free page of
    every arena. It runs only when a second passes with the process nearly idle and RSS
    is above the lowest it has been (every second at first, less often while trims find
    little), so a busy server keeps its warm memory. Idleness is judged by the process's
    own CPU time: on a machine busy with other work a starved server can look idle while a
    flood lasts, and the trims that come then must not stop the one after it."""

    def __init__(self, trim: Callable[[int], int], interval_s: float = IDLE_INTERVAL_S) -> None:
        self._trim = trim
        self._interval_s = interval_s
        self._stop = threading.Event()
        self.trims = 0  # how many times it trimmed (for tests and logs)
        self._thread = threading.Thread(target=self._run, name="idle-trim", daemon=True)

    def start(self) -> IdleTrimmer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        # The floor is the lowest RSS seen, never raised by a trim: a trim that comes while
        # the flood's memory is still in use hands back little, and what is freed after it
        # must still be trimmed, though RSS does not grow again.
        floor = _rss_bytes()
        cpu = time.process_time()  # every thread of the process
        wait_s, next_at = self._interval_s, 0.0
        while not self._stop.wait(self._interval_s):
            now = time.process_time()
            used, cpu = now - cpu, now
            rss = _rss_bytes()
            floor = min(floor, rss)
            if (used > self._interval_s * IDLE_CPU_FRACTION or rss - floor < TRIM_GROWTH_BYTES
                    or time.monotonic() < next_at):
                continue
            self._trim(0)
            self.trims += 1
            after = _rss_bytes()
            cpu = time.process_time()  # the trim's own work is not the process being busy
            wait_s = self._interval_s if rss - after >= 2**20 else min(wait_s * 2, MAX_WAIT_S)
            next_at = time.monotonic() + wait_s
            log.debug("idle: malloc_trim took RSS from %.0f to %.0f MiB", rss / 2**20,
                      after / 2**20)


def trim_when_idle() -> IdleTrimmer | None:
    """Start an IdleTrimmer; None where there is no glibc malloc_trim or /proc/self/statm."""
    name = ctypes.util.find_library("c")
    if not name or not os.path.exists("/proc/self/statm"):
        return None
    try:
        malloc_trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    malloc_trim.argtypes = [ctypes.c_size_t]
    malloc_trim.restype = ctypes.c_int
    return IdleTrimmer(malloc_trim).start()
