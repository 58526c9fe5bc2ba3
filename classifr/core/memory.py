"""Giving the memory of large, short-lived buffers back to the system once they are freed.

glibc raises its mmap threshold to the size of each large block that is freed (up to 32 MB), so
after the first large image, Pillow's 16 MB blocks and numpy's arrays come from the malloc arena of
whichever thread decoded them, and an arena keeps freed pages: 8 large predictions at once left
3.7 GB held (docs/speed.md, "Memory per request"). A fixed threshold keeps every buffer of
`MMAP_THRESHOLD` or more in a mapping of its own, which free() unmaps at once.

glibc also gives each new thread an arena of its own (up to 8 per core), and each keeps the pages
its smaller freed buffers held: after 8 large predictions at once about 95 MB stayed held. At most
`MAX_ARENAS` arenas bring that to about 30 MB (docs/speed.md, "Memory per request"); request
threads then share arenas, which costs them nothing measurable on this scale of work.
"""

from __future__ import annotations

import ctypes
import logging
import sys

logger = logging.getLogger(__name__)

MMAP_THRESHOLD = 4 * 1024 * 1024
MAX_ARENAS = 2
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter numbers (malloc.h)
_M_ARENA_MAX = -8


def return_large_buffers_to_the_system(threshold: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold and its number of arenas for this process; False (and nothing
    changed) off glibc. Arenas made before the call stay; threads started later share at most
    `MAX_ARENAS`.

    A process-wide allocator setting, not state: calling it again sets the same value.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # glibc only: musl's mallopt does nothing
    except (OSError, AttributeError):
        logger.debug("not glibc: large buffers stay with the allocator's defaults")
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold)) and bool(mallopt(_M_ARENA_MAX, MAX_ARENAS))
