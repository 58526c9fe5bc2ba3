"""The HTTP API's inference pool: worker threads that gather waiting calls into batches.

A call to /v1 never waits in Gradio's queue (docs/api.md). Its images go into one queue; each of
`workers` threads takes the oldest waiting call and, without waiting for more, every other call
already waiting (up to `max_batch` images), and serves them with one `predict_batch` per model
version and top-k. A lone caller so pays no batching delay, and under load the calls that arrived
during one forward pass share the next (docs/speed.md, "HTTP API").
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

_STOP = object()


@dataclass(frozen=True)
class PredictionCall:
    """One HTTP call's images, and how they are to be served."""

    images: Sequence[bytes]
    names: Sequence[str | None]
    client: str | None
    version: str | None  # None: production (with the canary); else pinned
    top_k: int
    done: Future = field(default_factory=Future, compare=False)

    @property
    def key(self) -> tuple[str | None, int]:
        """Calls with the same key can share one `predict_batch`."""
        return self.version, self.top_k


# predict(images, names, clients, version, top_k) -> one result per image
Predict = Callable[[list[bytes], list[str | None], list[str | None], str | None, int], list[Any]]


class PredictionPool:
    """`workers` threads serving `PredictionCall`s in batches of up to `max_batch` images."""

    def __init__(self, predict: Predict, *, workers: int, max_batch: int) -> None:
        if workers < 1 or max_batch < 1:
            raise ValueError(f"workers and max_batch must be at least 1, got {workers} and {max_batch}")
        self._predict = predict
        self.max_batch = max_batch
        self._waiting: queue.SimpleQueue = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._serve, name=f"classifr-api-worker-{n}", daemon=True) for n in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, call: PredictionCall) -> Future:
        """Queue a call; its future gets the list of results (one per image) or the exception raised."""
        self._waiting.put(call)
        return call.done

    def close(self) -> None:
        for _ in self._threads:
            self._waiting.put(_STOP)

    def _serve(self) -> None:
        while True:
            first = self._waiting.get()
            if first is _STOP:
                return
            for calls in self._batches(self._gather(first)):
                self._run(calls)

    def _gather(self, first: PredictionCall) -> list[PredictionCall]:
        """The first call and every call already waiting, up to `max_batch` images in all."""
        calls, size = [first], len(first.images)
        while size < self.max_batch:
            try:
                call = self._waiting.get_nowait()
            except queue.Empty:
                break
            if call is _STOP:
                self._waiting.put(_STOP)  # for this thread's next turn
                break
            calls.append(call)
            size += len(call.images)
        return calls

    @staticmethod
    def _batches(calls: list[PredictionCall]) -> list[list[PredictionCall]]:
        by_key: dict[tuple[str | None, int], list[PredictionCall]] = {}
        for call in calls:
            by_key.setdefault(call.key, []).append(call)
        return list(by_key.values())

    def _run(self, calls: list[PredictionCall]) -> None:
        images = [image for call in calls for image in call.images]
        names = [name for call in calls for name in call.names]
        clients = [call.client for call in calls for _ in call.images]
        try:
            results = self._predict(images, names, clients, calls[0].version, calls[0].top_k)
        except BaseException as err:  # noqa: BLE001 - the callers get it; the worker goes on
            for call in calls:
                call.done.set_exception(err)
            return
        start = 0
        for call in calls:
            call.done.set_result(results[start : start + len(call.images)])
            start += len(call.images)
