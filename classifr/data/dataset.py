"""The project dataset: every image contributors give, with its label, in one imagefolder.

Layout under `CLASSIFR_HOME/dataset` (what `datasets.load_dataset("imagefolder", data_dir=...)` reads):

    metadata.jsonl          one JSON object per line, one line per (image, label)
    images/ab/abcd....jpg   every image once, upright and without metadata (docs/privacy.md),
                            named by the SHA-256 of the stored bytes
    categories.jsonl        categories created by contributors (also those with no image yet)
    README.md               the dataset card (written by `classifr.data.hub_sync`)

Writes are safe across threads and processes, and durable (docs/storage.md): one file lock
around every write; the image is written to a temporary file, fsynced and renamed into place
before its row is appended (classifr.core.storage.write_file_atomically); rows are appended whole
or not at all (classifr.core.storage.append_whole: every byte, fsync, cut back on failure). The
in-memory index believes a row only once it is on disk, so an image is answered "added" only
when it is stored. A failed write (disk full, permission, I/O) rejects only the images it
concerns, with a one-line reason, and pauses storing (`storage`) until a write succeeds.

Opening the dataset checks it (`repairs`): bytes after the last newline of metadata.jsonl or
categories.jsonl (a torn tail left by a crash or an older build) are moved to
`.quarantine/<file>.<UTC time>.torn` and the file is cut to its last whole line; unreadable
lines are reported; leftover temporary files are removed. Everything is append-only, so the Hub
sync (classifr.data.hub_sync) pushes only new or grown files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ContextManager

from filelock import FileLock, Timeout

from classifr.core.errors import ClassifrError, LabelError
from classifr.core.images import ImageLimits, LoadedImage, metadata_free_encoding, read_image
from classifr.core.labels import normalize_label
from classifr.core.storage import StorageError, StorageState, append_whole, storage_error, write_file_atomically
from classifr.data.split import TEST_PERCENT, held_out_of_label, split_of  # noqa: F401 - TEST_PERCENT: the dataset card's

logger = logging.getLogger(__name__)

SOURCES = ("import", "upload", "correction", "confirmation", "settlement")
SETTLEMENT = "settlement"  # a maintainer's choice among an image's conflicting labels (docs/monitoring.md)
FEEDBACK_SOURCES = ("correction", "confirmation")
SPLITS = ("train", "test")
ANONYMOUS = "anonymous"
MAX_CONTRIBUTOR_LENGTH = 96
NEW_CATEGORY = "New category…"  # the UI's choice for "create one"; never a label itself
CHUNK_SIZE = 64  # images per lock acquisition in add_many: other writers are never kept waiting long

# Stored file suffix per stored format: metadata_free_encoding gives a JPEG for a JPEG and a PNG
# for everything else, both formats that `datasets`' imagefolder reads.
_SUFFIXES = {"JPEG": ".jpg", "PNG": ".png"}
# Sidecar files that are not part of the data (never synced to the Hub).
LOCK_NAME = ".lock"
TMP_DIR = ".tmp"
QUARANTINE_DIR = ".quarantine"  # torn tails cut off metadata.jsonl / categories.jsonl, kept for a person to look at
APPENDED_FILES = ("metadata.jsonl", "categories.jsonl")
TAIL_BLOCK = 64 * 1024  # bytes read from the end at a time to find the last newline


def _held_out_pairs(rows: Iterable[Row]) -> set[tuple[str, str]]:
    """(sha256, casefolded label) of every row that training holds out (classifr.data.split): the
    row's hash share plus, for a small label, enough to reach one in five."""
    by_label: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        by_label[row.label.casefold()].add(row.sha256)
    return {(sha, key) for key, shas in by_label.items() for sha in held_out_of_label(shas)}


def normalize_contributor(name: object) -> str:
    """The signed-in user's name, trimmed; `anonymous` when there is none."""
    if name is None or (isinstance(name, str) and not name.strip()):
        return ANONYMOUS
    if not isinstance(name, str):
        raise ClassifrError(f"contributor must be a string, got {type(name).__name__}: {name!r}")
    text = name.strip()
    if len(text) > MAX_CONTRIBUTOR_LENGTH or any(ch < " " or ch == "\x7f" for ch in text):
        raise ClassifrError(f"contributor name is too long or has control characters: {text[:100]!r}")
    return text


def validate_category(name: object) -> str:
    """A category name a contributor may create: a valid label without markup characters."""
    label = normalize_label(name)
    if "<" in label or ">" in label:
        raise LabelError(f"category name must not contain '<' or '>': {label!r}")
    if label.casefold() == NEW_CATEGORY.casefold() or label in {".", ".."}:
        raise LabelError(f"{label!r} cannot be a category name")
    return label


class SettlementError(ClassifrError, ValueError):
    """A settlement that names an image without conflicting labels, or a label it does not have."""


@dataclass(frozen=True)
class Feedback:
    """What the model said about an image that a contributor then confirmed or corrected."""

    predicted_label: str
    score: float
    model_version: str

    def __post_init__(self) -> None:
        for name in ("predicted_label", "model_version"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip() or len(value) > 200:
                raise ClassifrError(f"feedback {name} must be a non-empty string, got {value!r}")
        score = self.score
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not 0.0 <= score <= 1.0:
            raise ClassifrError(f"feedback score must be a probability between 0 and 1, got {score!r}")


@dataclass(frozen=True)
class Example:
    """One image to add, with its label; `feedback` for corrections and confirmations."""

    source: Any  # anything classifr.core.images.read_image accepts
    label: str
    name: str | None = None
    feedback: Feedback | None = None


@dataclass(frozen=True)
class Row:
    """One line of metadata.jsonl. Every key is always written (null where it does not apply), so
    every line has the same schema and `datasets` infers one set of features."""

    file_name: str
    label: str
    source: str
    split: str
    sha256: str
    created_at: str
    contributor: str
    predicted_label: str | None = None
    score: float | None = None
    model_version: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Row:
        return cls(**{key: data.get(key) for key in cls.__dataclass_fields__})


@dataclass(frozen=True)
class AddResult:
    """What happened to one image: `added`, `duplicate` (this image already has this label) or
    `rejected` (with the reason). `conflicts` lists other labels the same image already has."""

    name: str
    status: str
    label: str | None = None
    sha256: str | None = None
    split: str | None = None
    reason: str | None = None
    conflicts: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status != "rejected"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["conflicts"] = list(self.conflicts)
        return data


@dataclass(frozen=True)
class Category:
    name: str
    created_at: str
    contributor: str


@dataclass
class CategoryStats:
    """A category with its image counts; `pending` until the serving model knows the label."""

    name: str
    pending: bool
    total: int = 0
    by_source: dict[str, int] = field(default_factory=dict)
    by_split: dict[str, int] = field(default_factory=dict)  # the rows' `split` field (the hash share)
    held_out: int = 0  # images training holds out for testing (classifr.data.split: at least 1 in 5 of a small label)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class ProjectDataset:
    """The images and labels contributors gave to one Classifr project.

    One instance per process is enough and it may be shared by threads; other processes (the CLI
    next to the app) may write to the same folder at the same time. `write_guard` is an extra
    lock held around every write, e.g. the Hub sync's lock while it lists files to push.
    `repairs`: what the check at opening found and did (one line each); `storage`: whether
    storing is paused (classifr.core.storage.StorageState).
    """

    def __init__(self, root: Path, *, limits: ImageLimits = ImageLimits(), lock_timeout: float = 120.0) -> None:
        self.root = Path(root)
        self.limits = limits
        self.storage = StorageState(self.root, "the project dataset")
        try:
            (self.root / TMP_DIR).mkdir(parents=True, exist_ok=True)
        except OSError as err:  # a full or read-only disk: open anyway, writes report it per image
            self._storage_failed(err, "the project dataset")
        self._file_lock = FileLock(str(self.root / LOCK_NAME), timeout=lock_timeout)
        self._thread_lock = threading.RLock()
        self.write_guard: Callable[[], ContextManager[Any]] = nullcontext
        self._rows: list[Row] = []
        self._keys: set[tuple[str, str]] = set()  # (sha256, label casefolded)
        self._labels_of: dict[str, list[str]] = defaultdict(list)  # sha256 -> labels, in order
        self._row_labels: dict[str, str] = {}  # casefolded label -> its first spelling in a row
        self._settled: dict[str, str] = {}  # sha256 -> the label its newest settlement chose
        self._offset = 0  # bytes of metadata.jsonl already in memory
        self._categories: dict[str, Category] = {}  # casefolded name -> category
        self._categories_offset = 0
        self._unreadable: Counter[str] = Counter()  # file name -> complete lines that are not JSON
        self.repairs: tuple[str, ...] = self._check_files()

    @property
    def metadata_path(self) -> Path:
        return self.root / "metadata.jsonl"

    @property
    def categories_path(self) -> Path:
        return self.root / "categories.jsonl"

    # --- reading -----------------------------------------------------------------------------

    def rows(self) -> list[Row]:
        with self._locked():
            return list(self._rows)

    def categories(self, known: Iterable[str] = ()) -> list[CategoryStats]:
        """Every created category and every label with images, with counts; `known`: the serving
        model's labels (a category it does not know is pending). Sorted by name."""
        known_keys = {name.casefold() for name in known}
        with self._locked():
            stats = {key: CategoryStats(c.name, key not in known_keys) for key, c in self._categories.items()}
            effective = self._effective_rows()
            held = _held_out_pairs(effective)
            counted: set[tuple[str, str]] = set()
            for row in effective:
                if (row.sha256, row.label.casefold()) in counted:
                    continue  # a settlement row repeats the label it confirmed: one photo, counted once
                counted.add((row.sha256, row.label.casefold()))
                entry = stats.setdefault(row.label.casefold(), CategoryStats(row.label, row.label.casefold() not in known_keys))
                entry.total += 1
                entry.by_source[row.source] = entry.by_source.get(row.source, 0) + 1
                entry.by_split[row.split] = entry.by_split.get(row.split, 0) + 1
                entry.held_out += (row.sha256, row.label.casefold()) in held
        return sorted(stats.values(), key=lambda s: s.name.casefold())

    def effective_rows(self) -> list[Row]:
        """The rows that training reads: every row except those of a settled image whose label
        lost the settlement (the file stays append-only; a settlement row names the winner)."""
        with self._locked():
            return self._effective_rows()

    def _effective_rows(self) -> list[Row]:
        return [row for row in self._rows if self._settled.get(row.sha256, row.label).casefold() == row.label.casefold()]

    def image(self, sha256: str) -> bytes | None:
        """The stored bytes of an image of the dataset, None when it has no row or no file."""
        with self._locked():
            row = next((r for r in self._rows if r.sha256 == sha256), None)
        if row is None:
            return None
        try:
            return (self.root / row.file_name).read_bytes()
        except FileNotFoundError:
            return None

    def conflicts(self) -> list[dict[str, Any]]:
        """Images given more than one label since their last settlement (kept, for a maintainer
        to settle)."""
        with self._locked():
            return [
                {"sha256": sha, "labels": list(labels)} for sha, labels in self._labels_of.items() if len(labels) > 1
            ]

    def stats(self, known: Iterable[str] = ()) -> dict[str, Any]:
        """The `classifr dataset stats --json` shape (docs/cli.md), plus categories and conflicts."""
        with self._locked():
            rows = list(self._rows)
            images = len(self._labels_of)
        return {
            "total": len(rows),
            "images": images,
            "by_label": dict(sorted(Counter(r.label for r in rows).items())),
            "by_source": dict(sorted(Counter(r.source for r in rows).items())),
            "by_split": dict(sorted(Counter(r.split for r in rows).items())),
            "categories": [c.to_json() for c in self.categories(known)],
            "conflicts": self.conflicts(),
        }

    def resolve_label(self, name: str, known: Iterable[str] = ()) -> str | None:
        """The existing spelling of `name` (ignoring case) among categories, labels with images
        and `known` labels; None when it is new. Raises LabelError for a malformed name."""
        key = normalize_label(name).casefold()
        with self._locked():
            if key in self._categories:
                return self._categories[key].name
            if key in self._row_labels:
                return self._row_labels[key]
        return next((label for label in known if label.casefold() == key), None)

    # --- writing -----------------------------------------------------------------------------

    def create_category(self, name: object, *, contributor: object = None, known: Iterable[str] = ()) -> Category:
        """Create a category; LabelError when the name is invalid or exists (ignoring case)."""
        label = validate_category(name)
        who = normalize_contributor(contributor)
        known = list(known)
        with self._locked(write=True):
            existing = self.resolve_label(label, known)
            if existing is not None:
                raise LabelError(f"category {label!r} already exists as {existing!r}")
            return self._append_category(label, who)

    def settle(self, sha256: str, label: str, *, contributor: object = None) -> Row:
        """Settle an image's conflicting labels: append a `settlement` row with the chosen one,
        which becomes its only label for training (`effective_rows`) and ends the conflict.
        SettlementError when the image is not in conflict or `label` is not one of its labels."""
        who = normalize_contributor(contributor)
        with self._locked(write=True):
            labels = self._labels_of.get(sha256, []) if isinstance(sha256, str) else []
            if len(labels) < 2:
                raise SettlementError(f"image {str(sha256)[:12]!r} has no conflicting labels to settle")
            chosen = next((l for l in labels if isinstance(label, str) and l.casefold() == label.strip().casefold()), None)
            if chosen is None:
                raise SettlementError(f"{label!r} is not one of the labels of image {sha256[:12]}: {', '.join(labels)}")
            first = next(row for row in self._rows if row.sha256 == sha256)
            # The image keeps the split it already has, so a settlement never moves it between train and test.
            row = Row(file_name=first.file_name, label=chosen, source=SETTLEMENT, split=first.split, sha256=sha256,
                      created_at=_now(), contributor=who)
            self._append_lines(self.metadata_path, [row.to_json()], offset_attr="_offset", what="the settlement")
            self._remember(row)
        logger.info("image %s settled as %r by %s (was %s)", sha256[:12], chosen, who, labels)
        return row

    def add(self, example: Example, *, source: str, contributor: object = None, known: Iterable[str] = ()) -> AddResult:
        return self.add_many([example], source=source, contributor=contributor, known=known)[0]

    def add_many(
        self,
        examples: Iterable[Example],
        *,
        source: str,
        contributor: object = None,
        known: Iterable[str] = (),
        on_result: Callable[[AddResult], None] | None = None,
    ) -> list[AddResult]:
        """Add images with their labels; a label not seen before becomes a new category.

        Each image is checked (readable, within the limits) before anything is written; a bad one
        is `rejected` with the reason and the others go on; so is one that could not be stored
        (disk full: one-line reason), and never raises for that. `on_result` is called once per
        image, in order (for progress bars).
        """
        if source not in SOURCES or source == SETTLEMENT:  # settlements go through settle()
            raise ClassifrError(f"source must be one of {', '.join(s for s in SOURCES if s != SETTLEMENT)}, got {source!r}")
        who = normalize_contributor(contributor)
        known = list(known)
        results: list[AddResult] = []
        for chunk in _chunks(examples, CHUNK_SIZE):
            prepared = [self._prepare(example, source) for example in chunk]  # decode outside the lock
            try:
                with self._locked(write=True):
                    chunk_results = self._write(prepared, source, who, known)
            except Timeout:
                raise
            except OSError as err:  # the lock file or a read under it failed: no row of the chunk was appended
                error = self._storage_failed(err, "this photo")
                chunk_results = [_rejected(item, str(error)) for item in prepared]
            for result in chunk_results:
                if on_result is not None:
                    on_result(result)
            results.extend(chunk_results)
        return results

    def write_lock(self) -> ContextManager[None]:
        """Hold every lock a write holds (thread, file, write_guard), e.g. to write a sidecar file."""
        return self._locked(write=True)

    # --- internals ---------------------------------------------------------------------------

    @contextmanager
    def _locked(self, *, write: bool = False) -> Iterator[None]:
        """Hold the thread lock and the file lock, and bring the in-memory index up to date."""
        with self._thread_lock, self._file_lock, (self.write_guard() if write else nullcontext()):
            self._refresh()
            yield

    def _prepare(self, example: Example, source: str) -> _Prepared | AddResult:
        name = example.name or _describe(example.source)
        try:
            label = normalize_label(example.label)  # new categories are checked further in _label
            if source in FEEDBACK_SOURCES and example.feedback is None:
                raise ClassifrError(f"a {source} needs the model's prediction (feedback)")
            loaded = read_image(example.source, limits=self.limits, min_side=32, name=name)
            data, suffix = _stored_bytes(loaded, self.limits)
        except ClassifrError as err:
            return AddResult(name=name, status="rejected", reason=str(err))
        return _Prepared(name=name, label=label, data=data, suffix=suffix, feedback=example.feedback)

    def _write(self, prepared: Sequence[_Prepared | AddResult], source: str, who: str, known: list[str]) -> list[AddResult]:
        """Store the chunk's images, then append their rows in one write. An image counts as added
        (and enters the index) only once its row is on disk; a failed write rejects only the
        images it concerns."""
        outcomes: list[AddResult | _Pending] = []
        pending: list[_Pending] = []
        for item in prepared:
            outcome = item if isinstance(item, AddResult) else self._stage(item, source, who, known, pending)
            outcomes.append(outcome)
            if isinstance(outcome, _Pending):
                pending.append(outcome)
        self._append_rows(pending)
        return [outcome.result() if isinstance(outcome, _Pending) else outcome for outcome in outcomes]

    def _stage(self, item: _Prepared, source: str, who: str, known: list[str], pending: list[_Pending]) -> AddResult | _Pending:
        """Check one image against the index and the chunk's rows not appended yet; store its file."""
        try:
            label = self._label(item.label, who, known)
        except (LabelError, StorageError) as err:
            return _rejected(item, str(err))
        sha = _sha256(item.data)
        key = (sha, label.casefold())
        labels = self._labels_of.get(sha, []) + [entry.row.label for entry in pending if entry.row.sha256 == sha]
        others = tuple(l for l in labels if l.casefold() != label.casefold())
        if key in self._keys or any(entry.key == key for entry in pending):
            return AddResult(item.name, "duplicate", label, sha, split_of(sha), conflicts=others)
        try:
            file_name, created = self._store_image(item.data, sha, item.suffix)
        except StorageError as err:
            return _rejected(item, str(err))
        feedback = item.feedback if source in FEEDBACK_SOURCES else None
        row = Row(
            file_name=file_name,
            label=label,
            source=source,
            split=split_of(sha),
            sha256=sha,
            created_at=_now(),
            contributor=who,
            predicted_label=feedback.predicted_label if feedback else None,
            score=float(feedback.score) if feedback else None,
            model_version=feedback.model_version if feedback else None,
        )
        return _Pending(item.name, row, others, created)

    def _append_rows(self, pending: list[_Pending]) -> None:
        """Append the rows in one write; when that fails, one at a time, so only the rows that do
        not fit are rejected. Rows on disk enter the index; an image this chunk stored whose rows
        all failed is removed again (nothing points to it)."""
        if not pending:
            return
        try:
            self._append_lines(self.metadata_path, [e.row.to_json() for e in pending], offset_attr="_offset", what="this photo")
        except StorageError:
            for entry in pending:
                try:
                    self._append_lines(self.metadata_path, [entry.row.to_json()], offset_attr="_offset", what="this photo")
                except StorageError as err:
                    entry.error = str(err)
        for entry in pending:
            if entry.error is None:
                self._remember(entry.row)
                if entry.others:
                    logger.warning("image %s now has labels %s and %r (kept as a conflict)", entry.row.sha256[:12], entry.others, entry.row.label)
        stored = {entry.row.sha256 for entry in pending if entry.error is None}
        for entry in pending:
            if entry.error is not None and entry.created and entry.row.sha256 not in stored:
                _remove(self.root / entry.row.file_name)

    def _label(self, name: str, contributor: str, known: list[str]) -> str:
        """The existing spelling of `name`, or a new category created for it."""
        existing = self.resolve_label(name, known)
        if existing is not None:
            return existing
        return self._append_category(validate_category(name), contributor).name

    def _store_image(self, data: bytes, sha: str, suffix: str) -> tuple[str, bool]:
        """Write the image once, atomically: the relative file name the row points to, and whether
        this call created the file. StorageError when it could not be written."""
        relative = f"images/{sha[:2]}/{sha}{suffix}"
        path = self.root / relative
        if path.exists():
            return relative, False
        try:
            write_file_atomically(path, data, self.root / TMP_DIR, what="this photo")
        except StorageError as err:
            raise self._storage_failed(err, "this photo")
        return relative, True

    def _append_category(self, name: str, contributor: str) -> Category:
        category = Category(name=name, created_at=_now(), contributor=contributor)
        self._append_lines(self.categories_path, [asdict(category)], offset_attr="_categories_offset", what=f"the category {name!r}")
        self._categories[name.casefold()] = category
        logger.info("new category %r by %s", name, contributor)
        return category

    def _append_lines(self, path: Path, items: list[dict[str, Any]], *, offset_attr: str, what: str) -> None:
        """Append complete lines whole (classifr.core.storage.append_whole), after moving a torn
        tail past the last line read to the quarantine; the offset moves only once they are on disk."""
        payload = "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items).encode()
        try:
            self._cut_torn_tail(path, getattr(self, offset_attr))
            size = append_whole(path, payload, what=what)
        except StorageError as err:
            raise self._storage_failed(err, what)
        setattr(self, offset_attr, size)
        self.storage.succeeded()

    def _cut_torn_tail(self, path: Path, end: int) -> str | None:
        """Move the bytes of `path` past `end` (its last whole line) to the quarantine and cut the
        file there; a one-line report, or None when there was nothing past `end`."""
        try:
            size = path.stat().st_size
            if size <= end:
                return None
            with open(path, "rb") as handle:
                handle.seek(end)
                tail = handle.read(size - end)
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
            target = self.root / QUARANTINE_DIR / f"{path.name}.{stamp}.torn"
            write_file_atomically(target, tail, self.root / TMP_DIR, what=f"the torn end of {path.name}")
            with open(path, "r+b") as handle:
                handle.truncate(end)
                handle.flush()
                os.fsync(handle.fileno())
        except FileNotFoundError:
            return None
        except OSError as err:
            raise storage_error(err, f"the torn end of {path.name}") from err
        message = f"{path.name}: moved a torn last line ({len(tail)} bytes) to {QUARANTINE_DIR}/{target.name}"
        logger.warning("project dataset %s: %s", self.root, message)
        return message

    def _storage_failed(self, err: OSError, what: str) -> StorageError:
        """The failure as a one-line StorageError; storing is paused when it would repeat."""
        error = storage_error(err, what)
        assert error is not None  # every OSError is a storage failure
        self.storage.failed(error)
        return error

    def _check_files(self) -> tuple[str, ...]:
        """The check at opening (module docstring): one line per repair or problem. Never raises
        for a storage failure: a dataset on a full disk still opens and reads."""
        repairs: list[str] = []
        try:
            with self._thread_lock, self._file_lock:
                removed = _remove_all(self.root / TMP_DIR)
                if removed:
                    repairs.append(f"removed {removed} leftover temporary files")
                for name in APPENDED_FILES:
                    try:
                        message = self._cut_torn_tail(self.root / name, _whole_lines_end(self.root / name))
                    except StorageError as err:
                        self.storage.failed(err)
                        message = f"{name}: a torn last line stays until it can be moved ({err})"
                    if message:
                        repairs.append(message)
                self._refresh()
        except Timeout:
            raise
        except OSError as err:
            repairs.append(f"the check at opening failed: {self._storage_failed(err, 'the project dataset')}")
        repairs += [f"{name}: {count} unreadable lines skipped" for name, count in sorted(self._unreadable.items())]
        if repairs:
            logger.warning("project dataset %s at opening: %s", self.root, "; ".join(repairs))
        return tuple(repairs)

    def _refresh(self) -> None:
        """Read the lines other writers appended since the last look (the files only grow)."""
        items, self._offset = self._new_lines(self.metadata_path, self._offset, self._reset_rows)
        for item in items:
            if all(isinstance(item.get(key), str) for key in ("file_name", "label", "sha256")):
                self._remember(Row.from_json(item))
            else:
                self._unreadable[self.metadata_path.name] += 1
                logger.error("skipping a row of %s without file_name, label or sha256: %.80r", self.metadata_path, item)
        items, self._categories_offset = self._new_lines(self.categories_path, self._categories_offset, self._categories.clear)
        for item in items:
            if not isinstance(item.get("name"), str):
                self._unreadable[self.categories_path.name] += 1
                continue
            category = Category(**{k: item.get(k) for k in ("name", "created_at", "contributor")})
            self._categories.setdefault(category.name.casefold(), category)

    def _new_lines(self, path: Path, offset: int, reset: Callable[[], None]) -> tuple[list[dict[str, Any]], int]:
        """The complete JSON objects past `offset`, and the offset after them (a torn last line
        stays unread); unreadable lines are logged and counted."""
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            size = 0
        if size < offset:  # replaced or cut by hand: read it again from the start
            reset()
            self._unreadable.pop(path.name, None)
            offset = 0
        if size == offset:
            return [], offset
        with open(path, "rb") as handle:
            handle.seek(offset)
            data = handle.read(size - offset)
        complete = data[: data.rfind(b"\n") + 1]
        items = []
        for line in complete.splitlines():
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                item = None
            if isinstance(item, dict):
                items.append(item)
            else:
                self._unreadable[path.name] += 1
                logger.error("skipping an unreadable line in %s after byte %d: %r", path, offset, line[:80])
        return items, offset + len(complete)

    def _reset_rows(self) -> None:
        self._rows, self._keys, self._labels_of, self._row_labels = [], set(), defaultdict(list), {}
        self._settled = {}

    def _remember(self, row: Row) -> None:
        self._rows.append(row)
        self._keys.add((row.sha256, row.label.casefold()))
        self._row_labels.setdefault(row.label.casefold(), row.label)
        if row.source == SETTLEMENT:
            # From here on the image has the settled label only; a later, different answer is a new conflict.
            self._settled[row.sha256] = row.label
            self._labels_of[row.sha256] = [row.label]
        elif row.label not in self._labels_of[row.sha256]:
            self._labels_of[row.sha256].append(row.label)


@dataclass(frozen=True)
class _Prepared:
    name: str
    label: str
    data: bytes
    suffix: str
    feedback: Feedback | None


@dataclass
class _Pending:
    """An image whose file is stored and whose row waits to be appended (`error` when it failed)."""

    name: str
    row: Row
    others: tuple[str, ...]  # other labels the image has (a conflict)
    created: bool  # this write stored the image file, so it is removed again if the row fails
    error: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.row.sha256, self.row.label.casefold())

    def result(self) -> AddResult:
        if self.error is not None:
            return AddResult(self.name, "rejected", reason=self.error)
        return AddResult(self.name, "added", self.row.label, self.row.sha256, self.row.split, conflicts=self.others)


def _rejected(item: _Prepared | AddResult, reason: str) -> AddResult:
    return item if isinstance(item, AddResult) else AddResult(item.name, "rejected", reason=reason)


def _whole_lines_end(path: Path) -> int:
    """The size of `path` up to its last newline (0 when it has none or is missing); reads from the end."""
    try:
        with open(path, "rb") as handle:
            end = handle.seek(0, os.SEEK_END)
            while end > 0:
                start = max(0, end - TAIL_BLOCK)
                handle.seek(start)
                found = handle.read(end - start).rfind(b"\n")
                if found >= 0:
                    return start + found + 1
                end = start
    except FileNotFoundError:
        pass
    return 0


def _remove_all(folder: Path) -> int:
    """Remove the files in `folder` (leftover temporary files); how many there were."""
    if not folder.is_dir():
        return 0
    files = [path for path in folder.iterdir() if path.is_file()]
    for path in files:
        _remove(path)
    return len(files)


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as err:
        logger.error("could not remove %s: %s", path, err)


def _stored_bytes(loaded: LoadedImage, limits: ImageLimits) -> tuple[bytes, str]:
    """The bytes to store and their suffix: the upright image with every metadata block removed,
    a JPEG for a JPEG and a PNG for anything else (docs/privacy.md). The encoding is
    deterministic, so the same photo gives the same file name and dedup by hash still holds."""
    data, image_format = metadata_free_encoding(loaded, limits)
    return data, _SUFFIXES[image_format]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _describe(source: Any) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.path.basename(os.fspath(source)) or str(source)
    return f"<{type(source).__name__}>"
