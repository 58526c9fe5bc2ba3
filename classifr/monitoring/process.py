"""The serving process's own health for the Monitor's "Server" panel: CPU, memory, free disk.

psutil (installed with accelerate) reads them on every platform; `/metrics` has the same figures
from prometheus_client's process collector (docs/monitoring.md, "Process health").
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil

logger = logging.getLogger(__name__)

MIN_CPU_INTERVAL_S = 1.0  # a CPU share over less than this is noise: the previous one is repeated


class ProcessHealth:
    """CPU share, memory and free disk of this process and of the project home's filesystem.

    The CPU share is measured between two reads at least MIN_CPU_INTERVAL_S apart, whoever reads;
    the first read gives the share since the process started.
    """

    def __init__(self, home: Path, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.home = Path(home)
        self._process = psutil.Process(os.getpid())
        self._clock = clock
        self._lock = threading.Lock()
        self._last_cpu_s = self._cpu_seconds()
        self._last_at = clock()
        self._cpu_percent = _share(self._last_cpu_s, time.time() - self._process.create_time())  # since start

    def disk_free_bytes(self) -> int:
        """Free bytes for this user on the filesystem that holds the project home (or its nearest existing parent)."""
        folder = self.home
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        return shutil.disk_usage(folder).free

    def cpu_percent(self) -> float:
        """CPU time over wall time since the previous read, in % of one core (200% = two cores busy)."""
        now = self._clock()
        with self._lock:
            if now - self._last_at >= MIN_CPU_INTERVAL_S:
                cpu_s = self._cpu_seconds()
                self._cpu_percent = _share(cpu_s - self._last_cpu_s, now - self._last_at)
                self._last_cpu_s, self._last_at = cpu_s, now
            return self._cpu_percent

    def snapshot(self) -> dict[str, float | int]:
        """`{"cpu_percent", "cores", "rss_bytes", "memory_available_bytes", "memory_total_bytes", "disk_free_bytes"}`."""
        memory = psutil.virtual_memory()
        return {
            "cpu_percent": self.cpu_percent(),
            "cores": _usable_cores(),
            "rss_bytes": self._process.memory_info().rss,
            "memory_available_bytes": memory.available,
            "memory_total_bytes": memory.total,
            "disk_free_bytes": self.disk_free_bytes(),
        }

    def _cpu_seconds(self) -> float:
        times = self._process.cpu_times()
        return times.user + times.system


def _share(cpu_s: float, wall_s: float) -> float:
    return 100.0 * cpu_s / wall_s if wall_s > 0 else 0.0


def _usable_cores() -> int:
    """The cores this process may run on (a container's CPU set), not the machine's."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
