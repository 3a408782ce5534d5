"""The process's own memory: large buffers go back to the operating system when freed.

Requests and their arrays are large (a batch of images is hundreds of KiB) and short-lived.
glibc's malloc serves blocks from 128 KiB up with mmap, which returns them to the system on
free, but it raises that threshold as such blocks are freed (up to 32 MiB), after which they
come from the heap, which it rarely shrinks: after a flood of 2,000 digits requests the server
kept 880 MiB of a 1.4 GiB peak. Pinning the threshold at 128 KiB (`mallopt`, as the
MALLOC_MMAP_THRESHOLD_ variable would) keeps large buffers on mmap, so the memory goes back
after the flood; `benchmarks/memory.py` measures both. Elsewhere than glibc this does
nothing."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

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
