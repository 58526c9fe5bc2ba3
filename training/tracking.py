"""Experiment tracking for training runs: every run's config and metrics in a local trackio project.

    with RunTracker.start(folder=tracking_folder(settings), run_name="v7-head", config={...}) as tracker:
        tracker.log({"loss": 0.4}, step=1)
        tracker.log({"accuracy": 0.9, "per_class": {"hat": {"f1": 0.8}}})  # stored as per_class/hat/f1
    list_runs(tracking_folder(settings))  # [{"name": "v7-head", "config": {...}, "metrics": {...}, ...}]

Runs go through accelerate's tracker integration (`accelerate.tracking.TrackioTracker`, the class
that `Accelerator(log_with="trackio").init_trackers()` builds) into trackio's SQLite database
`<folder>/classifr.db`, trackio project "classifr". The dashboard:
`TRACKIO_DIR=<folder> trackio show --project classifr`. Nothing leaves the machine.

Why no `Accelerator` object here: an Accelerator fixes the process-wide AcceleratorState, so a later
`Accelerator(mixed_precision="bf16")` (training/full.py on a GPU) in the same process (the app)
raises "AcceleratorState has already been initialized"; and `end_training()` also destroys the
process group of a distributed run. The tracker alone makes the same trackio calls without either.

Tracking never decides whether training succeeds: when it is disabled, trackio is missing, the
process is not the main one of a distributed run, or trackio fails to start, the run goes on
untracked (with a warning where that is a surprise).
"""

from __future__ import annotations

import builtins
import contextvars
import importlib.util
import logging
import numbers
import os
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from classifr.core.config import Settings
from classifr.core.errors import ClassifrError
from training.processes import is_main_process

logger = logging.getLogger(__name__)

TRACKER = "trackio"
PROJECT = "classifr"
# Logged by finish(): 1 when the run ended with an exception, else 0 (so every run has a last row).
FAILED_KEY = "failed"
MAX_RUN_NAME = 128
# With any of these set trackio sends runs to a Space, a server, a Bucket or a Dataset.
REMOTE_VARIABLES = ("TRACKIO_SPACE_ID", "TRACKIO_SERVER_URL", "TRACKIO_BUCKET_ID", "TRACKIO_DATASET_ID")
_LOG_COLUMNS = ("step", "timestamp")  # what trackio adds to every logged row

_warned: set[str] = set()


def tracking_folder(settings: Settings) -> Path:
    """Where a project's training runs are tracked: `CLASSIFR_HOME/tracking`."""
    return settings.home / "tracking"


def _warn_once(key: str, message: str, *args: Any) -> None:
    if key not in _warned:
        _warned.add(key)
        logger.warning(message, *args)


# --- trackio's storage folder, bound to ours while we use it ------------------------------------


class _TrackioFolder:
    """Points trackio at one folder while our runs (or a read) need it, and back afterwards.

    trackio has no folder parameter: its folder is `TRACKIO_DIR`, read from the environment when
    trackio is first imported and copied into several of its modules. Setting the variable only
    works before that import, once per process, and would leak into everything else; so while at
    least one of our runs is open we rebind those module constants to the run's folder, and
    restore them when the last one finishes. Runs may share a folder; a second folder at the same
    time is refused.

    While bound we also route trackio's prints to our debug log (on stdout they would corrupt
    `classifr train --json`) and disable its Hub user look-up (trackio asks /api/whoami-v2 for every
    local run when a token is set: a network call per run).
    """

    _DIRS = {"TRACKIO_DIR": "", "MEDIA_DIR": "media", "ARTIFACTS_DIR": "artifacts"}

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._folder: Path | None = None
        self._users = 0
        self._saved: list[tuple[Any, str, Any]] = []
        self._swaps: dict[int, Any] = {}  # id(our value) -> trackio's value, for modules imported meanwhile

    @contextmanager
    def bound(self, folder: Path) -> Iterator[None]:
        self.acquire(folder)
        try:
            yield
        finally:
            self.release()

    def acquire(self, folder: Path) -> None:
        with self._lock:
            if self._users and folder != self._folder:
                raise ClassifrError(
                    f"a training run is being tracked in {str(self._folder)!r}; cannot track in {str(folder)!r} at the same time"
                )
            if not self._users:
                self._bind(folder)
            self._users += 1

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            if not self._users:
                self._unbind()

    def _bind(self, folder: Path) -> None:
        import trackio.utils
        from trackio.sqlite_storage import SQLiteStorage

        ours = {name: folder / sub if sub else folder for name, sub in self._DIRS.items()}
        theirs = {name: getattr(trackio.utils, name) for name in self._DIRS}
        self._swaps = {id(ours[name]): theirs[name] for name in self._DIRS}
        self._folder = folder
        try:
            for module in _trackio_modules():
                self._patch(module, ours, theirs)
            # A trackio release that keeps its folder elsewhere must not write under ~/.cache unnoticed.
            where = SQLiteStorage.get_project_db_path(PROJECT).parent
            if where != folder:
                raise RuntimeError(f"trackio {_trackio_version()} would write to {str(where)!r}, not {str(folder)!r}")
        except BaseException:
            self._unbind()
            raise

    def _patch(self, module: Any, ours: dict[str, Path], theirs: dict[str, Path]) -> None:
        for name in self._DIRS:
            if getattr(module, name, None) is theirs[name]:
                self._set(module, name, ours[name])
        if "_get_default_namespace" in vars(module):
            self._set(module, "_get_default_namespace", _no_hub_lookup)
        self._set(module, "print", _print_to_log)

    def _set(self, module: Any, name: str, value: Any) -> None:
        self._saved.append((module, name, vars(module).get(name, _MISSING)))
        setattr(module, name, value)

    def _unbind(self) -> None:
        _close_trackio_connections()
        for module, name, old in reversed(self._saved):
            if old is _MISSING:
                vars(module).pop(name, None)
            else:
                setattr(module, name, old)
        # A trackio module first imported while bound copied our folder: give it trackio's.
        for module in _trackio_modules():
            for name in self._DIRS:
                value = vars(module).get(name)
                if id(value) in self._swaps:
                    setattr(module, name, self._swaps[id(value)])
        self._saved.clear()
        self._swaps = {}
        self._folder = None


_MISSING = object()
_FOLDER = _TrackioFolder()


def _trackio_modules() -> list[Any]:
    return [m for name, m in list(sys.modules.items()) if m is not None and (name == "trackio" or name.startswith("trackio."))]


def _no_hub_lookup() -> str:
    # trackio treats a failing look-up as "no user name" and carries on.
    raise RuntimeError("Classifr tracks runs locally: no Hub look-up")


def _print_to_log(*args: Any, **kwargs: Any) -> None:
    if kwargs.get("file") not in (None, sys.stdout):
        builtins.print(*args, **kwargs)
        return
    logger.debug("trackio: %s", (kwargs.get("sep") or " ").join(str(arg) for arg in args))


def _close_trackio_connections() -> None:
    # trackio keeps a SQLite connection open per database; ours close with our last run.
    close = getattr(sys.modules.get("trackio.sqlite_storage"), "_close_all_persistent_connections", None)
    if close is not None:
        close()


def _trackio_version() -> str:
    return str(getattr(sys.modules.get("trackio"), "__version__", "?"))


# --- checks -------------------------------------------------------------------------------------


def _check_folder(folder: Path) -> Path:
    folder = Path(folder).expanduser().resolve()
    if folder.exists() and not folder.is_dir():
        raise ClassifrError(f"the tracking folder must be a folder, but {str(folder)!r} is a file")
    return folder


def _check_run_name(run_name: str) -> str:
    if not isinstance(run_name, str) or not run_name.strip() or len(run_name) > MAX_RUN_NAME or not run_name.isprintable():
        raise ClassifrError(f"a run name must be 1 to {MAX_RUN_NAME} printable characters, got {run_name!r}")
    return run_name.strip()


def _check_config(config: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(config, Mapping):
        raise ClassifrError(f"a run config must be a dict, got {type(config).__name__}")
    for key in config:
        if not isinstance(key, str) or not key or key.startswith("_"):
            # trackio keeps keys starting with "_" for its own fields (_Created, _Username).
            raise ClassifrError(f"run config keys must be names not starting with '_', got {key!r}")
    return {key: _json_value(value) for key, value in config.items()}


def _check_step(step: int | None) -> None:
    if step is not None and (isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0):
        raise ClassifrError(f"a step must be a whole number >= 0, got {step!r}")


def _json_value(value: Any) -> Any:
    """Config values as JSON: numbers, strings, lists and dicts; anything else as its text."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, Mapping):
        return {str(key): _json_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(item) for item in value]
    number = _as_number(value)
    return str(value) if number is None else number


def _as_number(value: Any) -> int | float | None:
    """A plain int or float for numbers (numpy and 0-d torch ones included); None otherwise."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if getattr(value, "ndim", None) == 0 and callable(getattr(value, "item", None)):
        return _as_number(value.item())
    return None


def flatten_numbers(values: Mapping[str, Any], prefix: str = "") -> dict[str, int | float]:
    """Numbers only, nested dicts flattened: {"per_class": {"hat": {"f1": 0.8}}} -> {"per_class/hat/f1": 0.8}."""
    flat: dict[str, int | float] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_numbers(value, f"{name}/"))
            continue
        number = _as_number(value)
        if number is None:
            logger.debug("not tracked: %s is a %s, not a number", name, type(value).__name__)
        else:
            flat[name] = number
    return flat


# --- when to track ------------------------------------------------------------------------------


def _remote_variables() -> list[str]:
    return [name for name in REMOTE_VARIABLES if os.environ.get(name, "").strip()]


def _trackio_ready(purpose: str) -> bool:
    if importlib.util.find_spec(TRACKER) is None:
        _warn_once("missing", "trackio is not installed, so %s (pip install 'trackio>=0.40')", purpose)
        return False
    remote = _remote_variables()
    if remote:
        # trackio would send the runs off this machine; there is no argument that overrides these.
        _warn_once("remote", "%s is set and Classifr only tracks runs locally, so %s", " and ".join(remote), purpose)
        return False
    return True


# --- one run ------------------------------------------------------------------------------------


class RunTracker:
    """One training run's tracking; a no-op when tracking is off. Create with `RunTracker.start`."""

    def __init__(self, *, folder: Path, run_name: str, tracker: Any = None) -> None:
        self.folder = folder
        self.run_name = run_name
        self._tracker = tracker  # accelerate's TrackioTracker, None when not tracking
        self._finished = tracker is None
        self._lock = threading.Lock()

    @classmethod
    def start(cls, *, folder: Path, run_name: str, config: dict[str, Any], enabled: bool = True) -> RunTracker:
        """Open a run named `run_name` with `config` as its hyperparameters, stored under `folder`."""
        folder, run_name, config = _check_folder(folder), _check_run_name(run_name), _check_config(config)
        if not enabled or not _trackio_ready("training runs are not tracked") or not is_main_process():
            return cls(folder=folder, run_name=run_name)
        try:
            tracker = _open_tracker(folder, run_name, config)
        except ClassifrError:
            raise
        except Exception as err:  # tracking must not stop a training run
            logger.warning("run %r is not tracked: trackio failed to start in %s: %s", run_name, folder, err)
            return cls(folder=folder, run_name=run_name)
        logger.info("tracking run %r in %s", run_name, folder)
        return cls(folder=folder, run_name=run_name, tracker=tracker)

    @property
    def active(self) -> bool:
        """True while values logged here are stored."""
        return not self._finished

    def log(self, values: Mapping[str, Any], *, step: int | None = None) -> None:
        """Store the numbers in `values` (nested dicts as "a/b" keys; other values are dropped)."""
        _check_step(step)
        flat = flatten_numbers(values)
        with self._lock:
            if self._finished:
                if self._tracker is not None:
                    logger.warning("run %r is finished: %s not tracked", self.run_name, sorted(flat))
                return
            if flat:
                self._tracker.log(flat, step=None if step is None else int(step))

    def finish(self, *, failed: bool = False) -> None:
        """End the run (flushes to disk); `failed` is stored as the run's last value. Idempotent."""
        with self._lock:
            if self._finished:
                return
            self._finished = True
        try:
            self._tracker.log({FAILED_KEY: int(failed)})
            self._tracker.finish()
        finally:
            _FOLDER.release()

    def __enter__(self) -> RunTracker:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.finish(failed=exc_type is not None)


def _open_tracker(folder: Path, run_name: str, config: dict[str, Any]) -> Any:
    _FOLDER.acquire(folder)  # ClassifrError when another folder is being tracked
    try:
        return _start_tracker(folder, run_name, config)
    except BaseException:
        _FOLDER.release()
        raise


def _start_tracker(folder: Path, run_name: str, config: dict[str, Any]) -> Any:
    from accelerate.tracking import TrackioTracker

    folder.mkdir(parents=True, exist_ok=True)
    # The config goes to trackio.init, not to store_init_configuration(): that one updates
    # trackio's module-level "current run" config, which another open run may own.
    tracker = TrackioTracker(
        PROJECT, name=run_name, config=config, embed=False, auto_log_cpu=False, auto_log_gpu=False
    )
    # trackio.init() first finishes "the current run" of the caller's context (maybe another of
    # our runs) and makes the new one current there; a fresh context keeps both to this run.
    try:
        contextvars.Context().run(tracker.start)
    except Exception:
        run = getattr(tracker, "run", None)
        if run is not None:  # started, then failed: stop its writer thread before giving up
            run.finish()
        raise
    return tracker


# --- reading runs back --------------------------------------------------------------------------


def list_runs(folder: Path) -> list[dict[str, Any]]:
    """The runs tracked under `folder`, oldest first.

    Each: {"name", "run_id", "created_at" (ISO), "config", "metrics" (the last value of every
    metric), "last_step", "status" ("finished", "failed", or "unfinished" while running or after a
    crash)}.
    """
    folder = _check_folder(folder)
    if not folder.is_dir() or not _trackio_ready("tracked runs cannot be listed"):
        return []
    try:
        with _FOLDER.bound(folder):
            from trackio.sqlite_storage import SQLiteStorage

            return [_summary(SQLiteStorage, record) for record in SQLiteStorage.get_run_records(PROJECT)]
    except ClassifrError:
        raise
    except Exception as err:  # e.g. a trackio release whose storage we do not know
        logger.warning("cannot list the runs tracked in %s: %s", folder, err)
        return []


def _summary(storage: Any, record: Mapping[str, Any]) -> dict[str, Any]:
    name, run_id = record["name"], record.get("id")
    config = storage.get_run_config(PROJECT, run=name, run_id=run_id) or {}
    metrics, last_step = _last_values(storage.get_logs(PROJECT, run=name, run_id=run_id))
    failed = metrics.pop(FAILED_KEY, None)
    return {
        "name": name,
        "run_id": run_id,
        "created_at": record.get("created_at"),
        "config": {key: value for key, value in config.items() if not key.startswith("_")},
        "metrics": metrics,
        "last_step": last_step,
        "status": "unfinished" if failed is None else "failed" if failed else "finished",
    }


def _last_values(rows: list[dict[str, Any]]) -> tuple[dict[str, int | float], int | None]:
    last: dict[str, int | float] = {}
    last_step = None
    for row in sorted(rows, key=lambda row: row.get("step") or 0):  # stable: same-step rows keep their order
        last_step = row.get("step", last_step)
        for key, value in row.items():
            number = None if key in _LOG_COLUMNS else _as_number(value)
            if number is not None:
                last[key] = number
    return last, last_step
