"""What a stretch of training costs: images/s, peak memory, CPU share and GPU use (docs/retraining.md).

    with ResourceMeter(device=accelerator.device) as meter:
        for epoch in ...:
            meter.start()
            ...train one epoch on `images` images...
            record.update(meter.stop(images))  # RESOURCE_KEYS

Between `start()` and `stop()` (a window) a sampler thread reads the memory of this process and its
children (DataLoader workers are child processes) every `interval` seconds, and the GPU's
utilization where there is one. Measuring never fails a run: a value that cannot be read is None
and is warned about once per meter.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self, TypeVar

import psutil
import torch

logger = logging.getLogger(__name__)

RESOURCE_KEYS = ("images_per_second", "peak_memory_mb", "cpu_percent", "gpu_percent", "gpu_peak_memory_mb")
MB = 2**20

T = TypeVar("T")


class ResourceMeter:
    """Measures windows of work (an epoch, an embedding pass); see the module docstring."""

    def __init__(self, *, device: torch.device | str = "cpu", interval: float = 0.5) -> None:
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not math.isfinite(interval) or interval <= 0:
            raise ValueError(f"interval must be a positive number of seconds, got {interval!r}")
        self.interval = float(interval)
        self.device = torch.device(device)
        self._cuda = self.device.type == "cuda" and torch.cuda.is_available()
        self._process = psutil.Process(os.getpid())
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned: set[str] = set()
        self._open = False
        self._started_at = 0.0
        self._cpu_at_start: float | None = None
        self._peak_rss: int | None = None
        self._gpu_busy: list[float] = []

    # --- the window ---------------------------------------------------------------------------

    def start(self) -> None:
        """Open a window: peaks, the CPU-time baseline and the GPU's peak memory start afresh."""
        if self._closed.is_set():
            raise RuntimeError("this ResourceMeter is closed")
        with self._lock:
            self._peak_rss = None
            self._gpu_busy = []
            if self._cuda:
                self._read("gpu_peak_memory_mb", lambda: torch.cuda.reset_peak_memory_stats(self.device))
            self._cpu_at_start = self._read("cpu_percent", self._cpu_seconds)
            self._started_at = time.perf_counter()
            self._open = True
        self._sample()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run_sampler, name="classifr-resource-meter", daemon=True)
            self._thread.start()

    def stop(self, images: int) -> dict[str, float | None]:
        """Close the window; every RESOURCE_KEYS key (GPU ones None without CUDA), `images` done in it."""
        if isinstance(images, bool) or not isinstance(images, int) or images < 0:
            raise ValueError(f"images must be a whole number >= 0, got {images!r}")
        if not self._open:
            raise RuntimeError("ResourceMeter.stop() without start()")
        self._sample()
        with self._lock:
            self._open = False
            seconds = time.perf_counter() - self._started_at
            cpu_now = self._read("cpu_percent", self._cpu_seconds) if self._cpu_at_start is not None else None
            peak_rss, gpu_busy = self._peak_rss, list(self._gpu_busy)
            gpu_peak = self._read("gpu_peak_memory_mb", lambda: torch.cuda.max_memory_allocated(self.device)) if self._cuda else None
        cpu_percent = None
        if cpu_now is not None and seconds > 0:
            # A share of the machine, so one busy core of two reads 50 (docs/retraining.md).
            cpu_percent = min(100.0, 100.0 * (cpu_now - self._cpu_at_start) / seconds / _usable_cores())
        return {
            "images_per_second": _rounded(images / seconds if seconds > 0 else None, 2),
            "peak_memory_mb": _rounded(peak_rss / MB if peak_rss is not None else None, 1),
            "cpu_percent": _rounded(cpu_percent, 1),
            "gpu_percent": _rounded(sum(gpu_busy) / len(gpu_busy) if gpu_busy else None, 1),
            "gpu_peak_memory_mb": _rounded(gpu_peak / MB if gpu_peak is not None else None, 1),
        }

    def close(self) -> None:
        """Stop the sampler thread; the meter cannot be started again. Idempotent."""
        self._closed.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # --- sampling -------------------------------------------------------------------------------

    def _run_sampler(self) -> None:
        while not self._closed.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        with self._lock:
            if not self._open:
                return
            rss = self._read("peak_memory_mb", self._rss_with_children)
            if rss is not None:
                self._peak_rss = rss if self._peak_rss is None else max(self._peak_rss, rss)
            if self._cuda:
                busy = self._read("gpu_percent", lambda: torch.cuda.utilization(self.device))
                if busy is not None:
                    self._gpu_busy.append(float(busy))

    def _read(self, key: str, read: Callable[[], T]) -> T | None:
        """`read()`, or None (and one warning per key) when it fails: measuring must not stop training."""
        try:
            return read()
        except Exception as err:  # noqa: BLE001 - psutil, NVML and CUDA each raise their own kinds
            if key not in self._warned:
                self._warned.add(key)
                logger.warning("cannot measure %s while training, leaving it out: %s", key, err)
            return None

    def _children(self) -> list[psutil.Process]:
        pids = _child_pids(self._process.pid)
        if pids is None:  # no /proc/PID/task/TID/children: psutil scans every process (about 1.6 ms)
            return self._process.children(recursive=True)
        children = []
        for pid in pids:
            try:
                children.append(psutil.Process(pid))
            except psutil.Error:
                continue
        return children

    def _rss_with_children(self) -> int:
        total = self._process.memory_info().rss
        for child in self._children():
            try:
                total += child.memory_info().rss
            except psutil.Error:  # a worker that ended between the listing and the read
                continue
        return total

    def _cpu_seconds(self) -> float:
        """CPU seconds of this process, its ended children it waited for, and its running children."""
        times = self._process.cpu_times()
        total = times.user + times.system + times.children_user + times.children_system
        for child in self._children():
            try:
                child_times = child.cpu_times()
            except psutil.Error:
                continue
            total += child_times.user + child_times.system
        return total


def _child_pids(pid: int) -> list[int] | None:
    """Descendants of `pid` from Linux's per-thread `children` files; None where the kernel has none.

    Listing them through psutil reads the status of every process on the machine: 1.6 ms of CPU
    per sample here, against about 0.15 ms this way.
    """
    found: list[int] = []
    waiting = [pid]
    while waiting:
        parent = waiting.pop()
        try:
            threads = os.listdir(f"/proc/{parent}/task")
        except OSError:
            if parent == pid:
                return None
            continue  # a child that ended meanwhile
        for thread in threads:
            try:
                with open(f"/proc/{parent}/task/{thread}/children") as handle:
                    kids = [int(word) for word in handle.read().split()]
            except FileNotFoundError:
                if parent == pid and thread == str(pid):
                    return None  # a kernel without CONFIG_PROC_CHILDREN
                continue
            except OSError:
                continue
            found += kids
            waiting += kids
    return found


def _usable_cores() -> int:
    """The logical cores this process may run on (a container's CPU set), not the machine's."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, psutil.cpu_count(logical=True) or 1)


def _rounded(value: Any, digits: int) -> float | None:
    return round(float(value), digits) if value is not None else None
