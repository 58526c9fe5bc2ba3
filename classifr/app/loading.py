"""A model version that loads in a background thread, so the app answers before the model is ready.

Importing torch and loading the weights take most of a start-up (docs/speed.md, "Start-up"). The
version's name and labels come from its config.json at once, which is all the UI needs to be
built; a prediction that arrives before the load finishes waits for it, and `/health` says
"loading" until then.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from classifr.core.errors import ModelLoadError
from classifr.core.labels import LabelSet, checkpoint_labels

if TYPE_CHECKING:
    from classifr.inference.classifier import Classifier

logger = logging.getLogger(__name__)


class PendingModel:
    """A version being loaded: `version` and `labels` now, the Classifier from `wait()`."""

    def __init__(self, folder: Path | str, *, version: str, load: Callable[[], Classifier], labels: LabelSet | None = None) -> None:
        self.version = version
        self.labels = labels if labels is not None else checkpoint_labels(Path(folder))
        self._load = load
        self._done = threading.Event()
        self._loaded: Classifier | None = None
        self._error: str | None = None
        self._thread = threading.Thread(target=self._run, name=f"classifr-load-{version}", daemon=True)

    def start(self) -> PendingModel:
        self._thread.start()
        return self

    @property
    def ready(self) -> bool:
        return self._done.is_set() and self._loaded is not None

    @property
    def error(self) -> str | None:
        """Why the load failed, once it has; None while loading or after success."""
        return self._error if self._done.is_set() else None

    def wait(self, timeout: float | None = None) -> Classifier:
        """The loaded Classifier; ModelLoadError when the load failed or did not finish in `timeout` s."""
        if not self._done.wait(timeout):
            raise ModelLoadError(f"model {self.version} is still loading; try again in a few seconds")
        if self._loaded is None:
            raise ModelLoadError(f"model {self.version} could not be loaded: {self._error}")
        return self._loaded

    def _run(self) -> None:
        started = time.perf_counter()
        try:
            self._loaded = self._load()
        except Exception as err:  # noqa: BLE001 - reported through wait() and /health, never lost in a thread
            self._error = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            logger.error("loading model %s failed: %s", self.version, self._error)
        else:
            logger.info("model %s loaded in %.1f s", self.version, time.perf_counter() - started)
        finally:
            self._done.set()
