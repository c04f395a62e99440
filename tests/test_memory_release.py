"""`probes.release_freed_memory`: memory a model's load freed is handed back before a session's
memory is read, so that what glibc happened to keep is not counted as the model's. Found: the
same ResNet18 file recorded `model_mb` 129.8 and 149.5 MiB in two runs from one shell (glibc kept
the load's freed buffers in one and not the other), 64.7 in every run once they were handed back.
Real glibc, real pages: a heap with 64 MiB freed below a live block, which `free` alone cannot
give back."""

from __future__ import annotations

import ctypes
import os

import pytest

from harness.agent import probes

pytestmark = pytest.mark.skipif(probes.libc() is None or not probes.libc().startswith("glibc"),
                                reason="malloc_trim is glibc's")

MIB = 2**20


def test_freed_heap_below_a_live_block_is_handed_back() -> None:
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    # small blocks (below the mmap threshold): from the heap, written so that they are resident
    blocks = [libc.malloc(4096) for _ in range(16 * 1024)]
    for block in blocks:
        ctypes.memset(block, 1, 4096)
    live = libc.malloc(64)  # holds the top of the heap: `free` cannot shrink it past this
    for block in blocks:
        libc.free(block)
    try:
        held = probes.memory_mb()["rss_mb"]
        assert probes.release_freed_memory()
        released = probes.memory_mb()["rss_mb"]
    finally:
        libc.free(live)
    assert held - released > 48, (held, released)  # of the 64 MiB freed


def test_the_fingerprint_says_which_c_library() -> None:
    assert probes.fingerprint()["libc"] == os.confstr("CS_GNU_LIBC_VERSION")
