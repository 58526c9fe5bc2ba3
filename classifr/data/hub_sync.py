"""Push the project dataset to a Hub dataset repo, with a dataset card written from the data.

`DatasetSync` pushes the dataset folder from a thread of its own (the CommitScheduler pattern, built
on `HfApi.create_commit` alone; `_Scheduler` says why): every few minutes it regenerates the card,
then uploads the files that are new or changed since its last push (the folder is append-only, so
that is the new images, `metadata.jsonl`, `categories.jsonl` and the card) in one commit, and makes
no commit when nothing changed. The Hub allows 128 commits per hour per repo, hence at least a minute
between scheduled pushes. While it runs, every dataset write holds the scheduler's lock
(`ProjectDataset.write_guard`), so a push never lists a half-written file. `stop()` pushes what is
pending once more and ends the thread.

A failed push is logged once with the repo id and shown by `status()`; the files it did not upload
stay pending and go with the next push.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import json
import logging
import math
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from huggingface_hub import CommitInfo, CommitOperationAdd, DatasetCard, DatasetCardData, HfApi
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils import filter_repo_objects

from classifr.core.config import Settings
from classifr.core.errors import ClassifrError, ConfigError
from classifr.core.text import escape_markdown
from classifr.data.dataset import ANONYMOUS, LOCK_NAME, QUARANTINE_DIR, SOURCES, TEST_PERCENT, TMP_DIR, ProjectDataset, Row

logger = logging.getLogger(__name__)

CARD_NAME = "README.md"
# Package data (pyproject.toml), so a non-editable install finds it too.
TEMPLATE_PATH = Path(__file__).resolve().parent / "templates" / "dataset_card.md"
MIN_EVERY_MINUTES = 1  # at most 60 scheduled commits an hour, well under the Hub's 128
MAX_EVERY_MINUTES = 24 * 60
# Sidecars of ProjectDataset and of write_card: never data, never pushed. Then the folders the Hub
# refuses in a commit (one file there would fail every push).
IGNORE_PATTERNS = [LOCK_NAME, f"{TMP_DIR}/**", f"{QUARANTINE_DIR}/**", "*.tmp", ".git", ".git/*", "*/.git/*", ".cache/*", "*/.cache/*"]
# Files that change in place (the rest are images, written once under their hash).
_GROWING_FILES = ("metadata.jsonl", "categories.jsonl", CARD_NAME)

# The imagefolder columns: name, type pinned in the card's YAML (so the Hub viewer's schema does not
# change when the first correction fills predicted_label), meaning shown in the card.
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("image", "image", "the photo; `file_name` in `metadata.jsonl` points at it"),
    ("label", "string", "the label the contributor gave"),
    ("source", "string", "how the row was added: `import`, `upload`, `correction` or `confirmation`"),
    ("split", "string", "`train` or `test`, fixed by the image's hash (see below)"),
    ("sha256", "string", "SHA-256 of the image's bytes; rows of the same image share it"),
    ("created_at", "string", "when the row was added (ISO 8601, UTC)"),
    ("contributor", "string", "the signed-in user who added it, or `anonymous`"),
    ("predicted_label", "string", "corrections and confirmations: the model's top label (else null)"),
    ("score", "float64", "corrections and confirmations: the model's probability for it (else null)"),
    ("model_version", "string", "corrections and confirmations: the model version that answered (else null)"),
)
SOURCE_MEANINGS = {
    "import": "a labelled folder imported in bulk",
    "upload": "a contributor uploaded the image with its label",
    "correction": "the model was wrong and a contributor gave the right label",
    "confirmation": "a contributor confirmed the model's answer",
    "settlement": "a maintainer chose the right label of an image that had conflicting answers",
}
_SIZE_CATEGORIES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                    (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"))
class DatasetSyncError(ClassifrError, OSError):
    """The project dataset could not be pushed to (or the sync set up with) its Hub repo."""


# --- the card --------------------------------------------------------------------------------


def render_card(
    dataset: ProjectDataset, *, license: str, repo_id: str | None, known: Iterable[str] = ()
) -> DatasetCard:
    """The dataset card for `dataset` as it is now: YAML header from the card data, counts in the body."""
    known = list(known)
    stats = dataset.stats(known)
    rows = dataset.rows()
    card_data = DatasetCardData(
        license=license,
        task_categories=["image-classification"],
        pretty_name=_pretty_name(repo_id),
        size_categories=[_size_category(stats["total"])],
        tags=["classifr", "imagefolder", "human-feedback"],
        configs=[_imagefolder_config()],
    )
    return DatasetCard.from_template(
        card_data,
        template_path=str(TEMPLATE_PATH),
        title=escape_markdown(_pretty_name(repo_id)),
        license=escape_markdown(license),
        hub_id=json.dumps(repo_id) if repo_id else None,  # a Python string literal in the code sample
        **_body_values(stats, rows, has_known=bool(known)),
    )


def write_card(dataset: ProjectDataset, *, license: str, repo_id: str | None, known: Iterable[str] = ()) -> Path:
    """Write the card to `dataset.root / README.md` atomically, under the dataset's write locks.

    The file is left alone when its text would not change, so its modification time says when the
    card last changed.
    """
    path = dataset.root / CARD_NAME
    with dataset.write_lock():  # also holds write_guard (the scheduler's lock)
        text = str(render_card(dataset, license=license, repo_id=repo_id, known=known))
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            return path
        temporary = dataset.root / TMP_DIR / f"{CARD_NAME}.{os.getpid()}.{threading.get_ident()}.tmp"
        with open(temporary, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    logger.info("wrote the dataset card %s", path)
    return path


def _body_values(stats: dict[str, Any], rows: list[Row], *, has_known: bool) -> dict[str, Any]:
    categories = stats["categories"]
    return {
        "rows_total": stats["total"],
        "images_total": stats["images"],
        "labels_count": len(categories),
        "train_rows": stats["by_split"].get("train", 0),
        "test_rows": stats["by_split"].get("test", 0),
        "columns": [{"name": name, "dtype": dtype, "meaning": meaning} for name, dtype, meaning in COLUMNS],
        "labels": [
            {
                "name": escape_markdown(c["name"]),
                "train": c["by_split"].get("train", 0),
                "test": c["by_split"].get("test", 0),
                "total": c["total"],
            }
            for c in categories
        ],
        "pending": sum(1 for c in categories if c["pending"]) if has_known else None,
        "sources": [
            {"name": s, "rows": stats["by_source"].get(s, 0), "meaning": SOURCE_MEANINGS[s]} for s in SOURCES
        ],
        "contributors": len({r.contributor for r in rows if r.contributor != ANONYMOUS}),
        "anonymous_rows": sum(1 for r in rows if r.contributor == ANONYMOUS),
        "conflicts": len(stats["conflicts"]),
        "test_percent": TEST_PERCENT,
    }


def _imagefolder_config() -> dict[str, Any]:
    """The `configs` entry: metadata.jsonl plus the images (not categories.jsonl, which would make
    the Hub pick the JSON loader), as one split, with the columns typed."""
    return {
        "config_name": "default",
        "data_files": [{"split": "train", "path": ["metadata.jsonl", "images/**"]}],
        "features": [{"name": name, "dtype": dtype} for name, dtype, _ in COLUMNS],
    }


def _pretty_name(repo_id: str | None) -> str:
    return f"Classifr project dataset: {repo_id.rsplit('/', 1)[-1]}" if repo_id else "Classifr project dataset"


def _size_category(rows: int) -> str:
    return next((name for limit, name in _SIZE_CATEGORIES if rows < limit), "n>1B")


# --- the sync --------------------------------------------------------------------------------


def _check_every(every_minutes: object) -> float:
    ok = isinstance(every_minutes, (int, float)) and not isinstance(every_minutes, bool)
    if not ok or not math.isfinite(every_minutes) or not MIN_EVERY_MINUTES <= every_minutes <= MAX_EVERY_MINUTES:
        raise ConfigError(
            f"dataset sync interval must be between {MIN_EVERY_MINUTES} and {MAX_EVERY_MINUTES} minutes "
            f"(the Hub allows 128 commits per hour per repo), got {every_minutes!r}"
        )
    return float(every_minutes)


class _Scheduler:
    """Pushes the dataset folder to its Hub repo on a thread of its own: every `every` minutes, when
    triggered, and once more when shut down with a final push.

    Not a `huggingface_hub.CommitScheduler`: its public API cannot end or join the thread it starts
    in `__init__` (which sleeps for `every` minutes between pushes and pushes at once, before the
    dataset's write_guard is set), and it registers an interpreter-exit push that only a private
    method can unregister. Here everything the sync needs is owned: the thread, a queue of pushes
    (so two never run at once), and which files the repo already has.
    """

    def __init__(
        self,
        *,
        dataset: ProjectDataset,
        license: str,
        known: Callable[[], Iterable[str]],
        api: HfApi,
        repo_id: str,
        every: float,
        private: bool | None,
    ) -> None:
        self.dataset = dataset
        self.card_license = license
        self.known = known
        self.api = api
        self.repo_type = "dataset"
        self.revision: str | None = None  # the repo's default branch
        self.every = every
        repo = api.create_repo(repo_id=repo_id, private=private, repo_type=self.repo_type, exist_ok=True)
        self.repo_id = repo.repo_id
        # Every dataset write holds it (DatasetSync sets the dataset's write_guard to it).
        self.lock = threading.Lock()
        self.status_lock = threading.Lock()
        self.outcome: dict[str, Any] = {
            "last_push_at": None, "last_commit": None, "files_uploaded": 0, "commits": 0,
            "failures": 0, "last_error": None, "last_error_at": None,
        }
        self.last_future: Future[CommitInfo | None] | None = None
        # What the repo has, by path in the repo: (mtime_ns, size) of an image (written once under its
        # hash), the SHA-256 of a file that changes in place. Only the worker thread touches it.
        self._uploaded: dict[str, Any] = {}
        self._checked_remote = False
        self._jobs: queue.SimpleQueue[Future[CommitInfo | None] | None] = queue.SimpleQueue()  # None: stop
        self._state_lock = threading.Lock()
        self._closing = False
        self._final_push = False
        self._thread = threading.Thread(target=self._run, name=f"dataset-sync {self.repo_id}", daemon=True)
        # Holds a weak reference only, so a stopped scheduler (and its dataset) can be collected.
        self._at_exit = functools.partial(_shut_down_at_exit, weakref.ref(self))

    def start(self) -> Future[CommitInfo | None]:
        """Start the thread and queue the first push (what is pending now)."""
        self._thread.start()
        # A sync never stopped (the process ends without close()) still pushes once at exit.
        atexit.register(self._at_exit)
        self.last_future = self.trigger()
        return self.last_future

    def trigger(self) -> Future[CommitInfo | None]:
        """Queue a push; its future gives the CommitInfo, None when nothing changed (or when shut down)."""
        future: Future[CommitInfo | None] = Future()
        with self._state_lock:
            if self._closing:
                future.set_result(None)
            else:
                self._jobs.put(future)
        return future

    def shut_down(self, *, final_push: bool) -> None:
        """Push what is pending once if `final_push` (errors logged), end and join the thread; later
        triggers do nothing. Idempotent."""
        with self._state_lock:
            if self._closing:
                return
            self._final_push = final_push
            self._closing = True
            self._jobs.put(None)
        atexit.unregister(self._at_exit)
        if self._thread.is_alive():
            self._thread.join()  # no timeout: the final push must end before the process does
        elif final_push and self._thread.ident is None:  # never started: push here
            self._push_quietly()

    # --- the worker thread -----------------------------------------------------------------

    def _run(self) -> None:
        every_s = self.every * 60
        deadline = time.monotonic() + every_s
        while True:
            try:
                job = self._jobs.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                job = Future()
                self.last_future = job
            if job is None:
                break
            if job.set_running_or_notify_cancel():
                if self._closing and not self._final_push:
                    job.set_result(None)  # queued before a stop without a final push
                else:
                    try:
                        job.set_result(self._push())
                    except Exception as err:  # logged and recorded by _push
                        job.set_exception(err)
            # Counted from the last push, whatever started it: at most one scheduled commit every
            # `every` minutes (the Hub allows 128 commits per hour per repo).
            deadline = time.monotonic() + every_s
        if self._final_push:
            self._push_quietly()

    def _push_quietly(self) -> None:
        try:
            self._push()
        except Exception:  # already logged and recorded by _push
            pass

    def _push(self) -> CommitInfo | None:
        """One commit with every file new or changed since the last push; None when there is none."""
        try:
            if not self._checked_remote:
                self._skip_images_on_hub()
            write_card(self.dataset, license=self.card_license, repo_id=self.repo_id, known=self.known())
            pending = self._pending()
            if not pending:
                logger.debug("nothing new to push to the Hub dataset %s", self.repo_id)
                return None
            info = self.api.create_commit(
                repo_id=self.repo_id,
                repo_type=self.repo_type,
                revision=self.revision,
                operations=[CommitOperationAdd(path_in_repo=p.path_in_repo, path_or_fileobj=p.source) for p in pending],
                commit_message=f"Sync the project dataset ({len(pending)} files)",
            )
        except Exception as err:
            self._failed(err)
            raise
        for file in pending:
            self._uploaded[file.path_in_repo] = file.version
        self._pushed(info, len(pending))
        return info

    def _skip_images_on_hub(self) -> None:
        """Count images the repo already has as uploaded. What was pushed is known in memory only, so
        without this every restart would offer every image again; images are named by their hash,
        so one with the same name on the Hub is the same file."""
        remote = set(self.api.list_repo_files(self.repo_id, repo_type=self.repo_type, revision=self.revision))
        with self.lock:
            for path in (self.dataset.root / "images").glob("*/*"):
                name = path.relative_to(self.dataset.root).as_posix()
                if name in remote:
                    self._uploaded[name] = _file_version(path.stat())
        self._checked_remote = True

    def _pending(self) -> list[_Pending]:
        """The files to push, listed under every lock a dataset write holds (this process's and other
        processes'), so none is half-written. Files that change in place are read then, so the
        commit holds exactly what was listed; they count as changed when their bytes did (an mtime
        can stay the same across a quick append), images when their mtime or size did."""
        root = self.dataset.root
        pending: list[_Pending] = []
        with self.dataset.write_lock():
            names = {p.relative_to(root).as_posix(): p for p in sorted(root.glob("**/*")) if p.is_file()}
            for name in filter_repo_objects(list(names), ignore_patterns=IGNORE_PATTERNS):
                path = names[name]
                if name in _GROWING_FILES:
                    data = path.read_bytes()
                    source, version = data, hashlib.sha256(data).hexdigest()
                else:
                    source, version = str(path), _file_version(path.stat())
                if self._uploaded.get(name) != version:
                    pending.append(_Pending(name, source, version))
        return pending

    def _pushed(self, info: CommitInfo, files: int) -> None:
        with self.status_lock:
            self.outcome.update(last_push_at=_now(), last_commit=info.oid, last_error=None)
            self.outcome["files_uploaded"] += files
            self.outcome["commits"] += 1
        logger.info("pushed %d files of the project dataset to %s (%s)", files, self.repo_id, info.oid[:12])

    def _failed(self, err: Exception) -> None:
        with self.status_lock:
            self.outcome.update(last_error=f"{type(err).__name__}: {err}", last_error_at=_now())
            self.outcome["failures"] += 1
        logger.error("could not push the project dataset to the Hub dataset %s: %s", self.repo_id, err)


@dataclass(frozen=True)
class _Pending:
    path_in_repo: str
    source: str | bytes  # a path (an image), or the bytes read while listing (a file that changes in place)
    version: Any


def _file_version(stat: os.stat_result) -> tuple[int, int]:
    return stat.st_mtime_ns, stat.st_size


def _shut_down_at_exit(ref: weakref.ref[_Scheduler]) -> None:
    scheduler = ref()
    if scheduler is not None:
        scheduler.shut_down(final_push=True)


class DatasetSync:
    """Keeps a Hub dataset repo in step with the project dataset; see the module docstring."""

    def __init__(self, scheduler: _Scheduler, dataset: ProjectDataset, previous_guard: Callable[[], Any]) -> None:
        self._scheduler = scheduler
        self._dataset = dataset
        self._previous_guard = previous_guard
        self._stopped = False
        self._stop_lock = threading.Lock()

    @classmethod
    def start(
        cls,
        dataset: ProjectDataset,
        *,
        repo_id: str,
        token: str | None,
        every_minutes: float,
        license: str,
        hf_api: HfApi | None = None,
        known: Callable[[], Iterable[str]] = tuple,
        private: bool | None = None,
    ) -> DatasetSync:
        """Create the repo if needed, push what is pending now (in the background), then every
        `every_minutes`. `known()` gives the serving model's labels, for the card."""
        every = _check_every(every_minutes)
        try:
            scheduler = _Scheduler(
                dataset=dataset, license=license, known=known, api=hf_api or HfApi(token=token),
                repo_id=repo_id, every=every, private=private,
            )
        except (HfHubHTTPError, OSError, ValueError) as err:
            raise DatasetSyncError(f"could not open the Hub dataset {repo_id!r} to sync to: {err}") from err
        sync = cls(scheduler, dataset, dataset.write_guard)
        dataset.write_guard = lambda: scheduler.lock
        scheduler.start()  # after write_guard is set: the first push lists files under its lock
        logger.info("syncing %s to the Hub dataset %s every %g minutes", dataset.root, repo_id, every)
        return sync

    @property
    def repo_id(self) -> str:
        return self._scheduler.repo_id

    @property
    def scheduler(self) -> _Scheduler:
        """What pushes: `lock` (held by every dataset write), `trigger()`, `last_future`, `every`."""
        return self._scheduler

    def push_now(self) -> CommitInfo | None:
        """Push pending files now and wait; None when nothing changed. DatasetSyncError on failure."""
        if self._stopped:
            raise DatasetSyncError(f"the sync to the Hub dataset {self.repo_id!r} is stopped")
        try:
            return self._scheduler.trigger().result()
        except Exception as err:
            raise DatasetSyncError(f"could not push the project dataset to {self.repo_id!r}: {err}") from err

    def stop(self, *, final_push: bool = True) -> None:
        """Stop pushing, after pushing pending files once (errors are logged, not raised). Idempotent."""
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
        self._scheduler.shut_down(final_push=final_push)
        self._dataset.write_guard = self._previous_guard
        logger.info("stopped syncing to the Hub dataset %s", self.repo_id)

    def status(self) -> dict[str, Any]:
        """repo_id, running, every_minutes, last_push_at, last_commit, files_uploaded, commits,
        failures, last_error (None after a successful push), last_error_at."""
        with self._scheduler.status_lock:
            outcome = dict(self._scheduler.outcome)
        return {"repo_id": self.repo_id, "running": not self._stopped, "every_minutes": self._scheduler.every, **outcome}


def open_sync(
    settings: Settings,
    dataset: ProjectDataset,
    *,
    hf_api: HfApi | None = None,
    known: Callable[[], Iterable[str]] = tuple,
) -> DatasetSync | None:
    """The sync CLASSIFR_DATASET_REPO asks for, started; None when it is not set."""
    if settings.dataset_repo is None:
        return None
    if hf_api is None and not settings.hf_token:
        raise ConfigError(f"CLASSIFR_DATASET_REPO={settings.dataset_repo} needs HF_TOKEN (with write access to it)")
    return DatasetSync.start(
        dataset,
        repo_id=settings.dataset_repo,
        token=settings.hf_token,
        every_minutes=settings.dataset_sync_minutes,
        license=settings.dataset_license,
        hf_api=hf_api,
        known=known,
    )


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
