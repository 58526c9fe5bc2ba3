"""Push the project dataset to a Hub dataset repo, with a dataset card written from the data.

`DatasetSync` runs a `huggingface_hub.CommitScheduler` on the dataset folder: every few minutes it
uploads the files that are new or changed since its last push (the folder is append-only, so that is
the new images, `metadata.jsonl`, `categories.jsonl` and the card) in one commit, and makes no commit
when nothing changed. The Hub allows 128 commits per hour per repo, hence at least a minute between
pushes. While it runs, every dataset write holds the scheduler's lock (`ProjectDataset.write_guard`),
so a push never lists a half-written file.

A failed push is logged with the repo id and shown by `status()`; the files it did not upload stay
pending and go with the next push.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import re
import threading
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from huggingface_hub import CommitInfo, CommitScheduler, DatasetCard, DatasetCardData, HfApi
from huggingface_hub.errors import HfHubHTTPError

from classifr.core.config import Settings
from classifr.data.dataset import ANONYMOUS, LOCK_NAME, SOURCES, TEST_PERCENT, TMP_DIR, ProjectDataset, Row
from classifr.core.errors import ClassifrError, ConfigError
from classifr.core.text import escape_markdown

logger = logging.getLogger(__name__)

CARD_NAME = "README.md"
# Package data (pyproject.toml), so a non-editable install finds it too.
TEMPLATE_PATH = Path(__file__).resolve().parent / "templates" / "dataset_card.md"
MIN_EVERY_MINUTES = 1  # at most 60 scheduled commits an hour, well under the Hub's 128
MAX_EVERY_MINUTES = 24 * 60
# Sidecars of ProjectDataset and of write_card: never data, never pushed.
IGNORE_PATTERNS = [LOCK_NAME, f"{TMP_DIR}/**", "*.tmp"]
# Files that change in place (the rest are images, written once under their hash).
_GROWING_FILES = ("metadata.jsonl", "categories.jsonl", CARD_NAME)
_THREAD_JOIN_S = 10.0

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

    The file is left alone when its text would not change: CommitScheduler uploads a file whenever
    its modification time moves, and an unchanged card must not cost a commit.
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


class _CardScheduler(CommitScheduler):
    """A CommitScheduler that writes the card before each push, records how pushes went, and whose
    thread ends as soon as it is stopped."""

    def __init__(
        self, *, dataset: ProjectDataset, license: str, known: Callable[[], Iterable[str]], **kwargs: Any
    ) -> None:
        # Set before super().__init__, which starts the thread.
        self.dataset = dataset
        self.card_license = license
        self.known = known
        self.wakeup = threading.Event()
        self.status_lock = threading.Lock()
        self.outcome: dict[str, Any] = {
            "last_push_at": None, "last_commit": None, "files_uploaded": 0, "commits": 0,
            "failures": 0, "last_error": None, "last_error_at": None,
        }
        self._checked_remote = False
        super().__init__(**kwargs)

    def _run_scheduler(self) -> None:
        # Replaces the upstream loop, which pushes the moment the thread starts (before DatasetSync has
        # set the dataset's write_guard; start() triggers that first push itself) and then sleeps with
        # time.sleep, so a stopped scheduler's thread lived on for up to `every` minutes.
        while not self.wakeup.wait(self.every * 60):
            self.last_future = self.trigger()

    def push_to_hub(self) -> CommitInfo | None:
        try:
            if not self._checked_remote:
                self._skip_images_on_hub()
            write_card(self.dataset, license=self.card_license, repo_id=self.repo_id, known=self.known())
            sizes = self._sizes()
            before = dict(self.last_uploaded)
            info = super().push_to_hub()
            self._forget_grown(sizes)
        except Exception as err:
            self._failed(err)
            raise
        self._pushed(info, sum(1 for path, mtime in self.last_uploaded.items() if before.get(path) != mtime))
        return info

    def _skip_images_on_hub(self) -> None:
        """Count images the repo already has as uploaded. `last_uploaded` lives in memory only, so
        without this every restart would hash and offer every image again; images are named by
        their hash, so one with the same name on the Hub is the same file."""
        remote = set(self.api.list_repo_files(self.repo_id, repo_type=self.repo_type, revision=self.revision))
        with self.lock:
            for path in (self.folder_path / "images").glob("*/*"):
                if path.relative_to(self.folder_path).as_posix() in remote:
                    self.last_uploaded[path] = path.stat().st_mtime
        self._checked_remote = True

    def _sizes(self) -> dict[Path, int]:
        with self.lock:
            return {p: p.stat().st_size for p in (self.folder_path / n for n in _GROWING_FILES) if p.is_file()}

    def _forget_grown(self, sizes: dict[Path, int]) -> None:
        # CommitScheduler compares modification times only. A row appended right after its listing,
        # within the file system's timestamp granularity (milliseconds), leaves the mtime it recorded
        # unchanged and would not be pushed until the next write. A file that grew during this push
        # is therefore pushed again next time (at worst once more than needed).
        with self.lock:
            for path, size in sizes.items():
                if path.is_file() and path.stat().st_size != size:
                    self.last_uploaded.pop(path, None)

    def _pushed(self, info: CommitInfo | None, files: int) -> None:
        if info is None:
            return
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

    def shut_down(self, *, final_push: bool) -> None:
        """End the thread, optionally push what is pending once, then ignore any later trigger."""
        self.wakeup.set()
        self._scheduler_thread.join(timeout=_THREAD_JOIN_S)
        if self._scheduler_thread.is_alive():  # only if upstream changed how its thread loops
            logger.warning("the scheduler thread of %s did not end; it is a daemon and ends with the app", self.repo_id)
        if final_push:
            try:
                self.trigger().result()
            except Exception:  # already logged and recorded by push_to_hub
                pass
        self.stop()
        atexit.unregister(self._push_to_hub)  # else the interpreter keeps it (and the dataset) until exit


class DatasetSync:
    """Keeps a Hub dataset repo in step with the project dataset; see the module docstring."""

    def __init__(self, scheduler: _CardScheduler, dataset: ProjectDataset, previous_guard: Callable[[], Any]) -> None:
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
            scheduler = _CardScheduler(
                dataset=dataset, license=license, known=known,
                repo_id=repo_id, repo_type="dataset", folder_path=dataset.root, every=every, private=private,
                token=token, ignore_patterns=list(IGNORE_PATTERNS), hf_api=hf_api,
            )
        except (HfHubHTTPError, OSError, ValueError) as err:
            raise DatasetSyncError(f"could not open the Hub dataset {repo_id!r} to sync to: {err}") from err
        sync = cls(scheduler, dataset, dataset.write_guard)
        dataset.write_guard = lambda: scheduler.lock
        scheduler.last_future = scheduler.trigger()
        logger.info("syncing %s to the Hub dataset %s every %g minutes", dataset.root, repo_id, every)
        return sync

    @property
    def repo_id(self) -> str:
        return self._scheduler.repo_id

    @property
    def scheduler(self) -> CommitScheduler:
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
