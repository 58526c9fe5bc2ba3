"""Training runs started from the app: one at a time, in a child process, with progress and cancel.

The run is `python -m training.train` (the same script as `classifr train`), so training never
blocks a request handler or competes with serving for the GIL, cancelling is terminating a
process, and `classifr` keeps not importing `training`. Progress comes back through a JSON-lines
file the script appends to (`--progress-file`): `{"stage", "fraction"}` lines and, per epoch of
the full strategy, `{"epoch_record": {...}}` lines (loss, accuracy and the resources watched while
training, docs/retraining.md); the outcome is the script's `--json` output.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from classifr.core.errors import ClassifrError

logger = logging.getLogger(__name__)


@dataclass
class JobState:
    """A snapshot of the current (or last) run, safe to hand to the UI."""

    status: str = "idle"  # idle | running | succeeded | failed | cancelled
    stage: str = ""
    fraction: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    arguments: list[str] = field(default_factory=list)
    outcome: dict[str, Any] | None = None  # the script's JSON on success
    error: str | None = None
    epochs: list[dict[str, Any]] = field(default_factory=list)  # the run's epoch records, oldest first

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class TrainingJobs:
    """Starts at most one training process for a project and follows it."""

    def __init__(
        self, home: Path, *, env: dict[str, str] | None = None, on_success: Callable[[], object] | None = None
    ) -> None:
        self.home = home
        self._env = env
        self._on_success = on_success  # e.g. serve what the run promoted, before anyone reads "succeeded"
        self._lock = threading.Lock()
        self._state = JobState()
        self._process: subprocess.Popen | None = None
        self._progress_file: Path | None = None

    def start(self, arguments: Sequence[str]) -> JobState:
        """Start `python -m training.train ARGUMENTS --json`; ClassifrError while one is running."""
        with self._lock:
            if self._state.status == "running":
                raise ClassifrError("a training run is already going on; wait for it or cancel it")
            folder = Path(tempfile.mkdtemp(prefix="classifr-train-"))
            self._progress_file = folder / "progress.jsonl"
            command = [sys.executable, "-m", "training.train", *arguments, "--json", "--quiet",
                       "--progress-file", str(self._progress_file)]
            env = {**(self._env or os.environ), "CLASSIFR_HOME": str(self.home)}
            self._process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            self._state = JobState(status="running", stage="starting", started_at=time.time(), arguments=list(arguments))
            threading.Thread(target=self._wait, args=(self._process,), name="classifr-training", daemon=True).start()
        logger.info("training started: %s", " ".join(arguments))
        return self.state()

    def cancel(self) -> JobState:
        with self._lock:
            if self._state.status != "running" or self._process is None:
                raise ClassifrError("no training run is going on")
            self._state.status = "cancelled"
            self._process.terminate()
        logger.info("training cancelled")
        return self.state()

    def state(self) -> JobState:
        with self._lock:
            state = JobState(**asdict(self._state))
        if state.status == "running":
            state.stage, state.fraction, state.epochs = self._progress(state.stage, state.fraction, state.epochs)
        return state

    def wait(self, timeout: float) -> JobState:
        """Block until the run ends (tests and the CLI); the state then."""
        deadline = time.monotonic() + timeout
        while self.state().status == "running" and time.monotonic() < deadline:
            time.sleep(0.2)
        return self.state()

    def _progress(
        self, stage: str, fraction: float, epochs: list[dict[str, Any]]
    ) -> tuple[str, float, list[dict[str, Any]]]:
        """(stage, fraction, epoch records) from the progress file; those given when it cannot be read."""
        try:
            lines = self._progress_file.read_text().splitlines() if self._progress_file else []
        except OSError:
            return stage, fraction, epochs
        found: list[dict[str, Any]] = []
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a line still being written
            if not isinstance(entry, dict):
                continue
            if isinstance(entry.get("epoch_record"), dict):
                found.append(entry["epoch_record"])
                continue
            try:
                stage, fraction = str(entry["stage"]), float(entry["fraction"])
            except (KeyError, TypeError, ValueError):
                continue
        return stage, fraction, found

    def _wait(self, process: subprocess.Popen) -> None:
        stdout, stderr = process.communicate()
        if process.returncode == 0 and self._on_success is not None:
            try:
                self._on_success()
            except ClassifrError as err:  # e.g. the new version was refused: a reason, not a bug
                logger.warning("after the training run: %s", err)
            except Exception:  # noqa: BLE001 - a thread of its own: log it; the run still reads as done
                logger.exception("after the training run")
        epochs = self._progress("", 0.0, [])[2]  # the last epochs, kept for the table after the run
        with self._lock:
            state = self._state
            state.finished_at = time.time()
            state.epochs = epochs
            if state.status == "cancelled":
                return
            if process.returncode == 0:
                state.status, state.stage, state.fraction = "succeeded", "done", 1.0
                state.outcome = json.loads(stdout)
            else:
                state.status = "failed"
                errors = [line for line in stderr.splitlines() if line.startswith("classifr: error:")]
                state.error = errors[-1].removeprefix("classifr: error: ") if errors else (stderr.strip().splitlines() or ["exit %d" % process.returncode])[-1]
        logger.info("training %s", state.status)
