"""The project dataset: every image contributors give, with its label, in one imagefolder.

Layout under `CLASSIFR_HOME/dataset` (what `datasets.load_dataset("imagefolder", data_dir=...)` reads):

    metadata.jsonl          one JSON object per line, one line per (image, label)
    images/ab/abcd....jpg   every image once, named by the SHA-256 of its bytes
    categories.jsonl        categories created by contributors (also those with no image yet)
    README.md               the dataset card (written by `classifr.data.hub_sync`)

Writes are safe across threads and processes: one file lock around every write, the image is
written to a temporary file, fsynced and renamed into place before its row is appended, and a
row is appended with a single write and fsynced. A crash therefore leaves at most an image that
no row points to, or a partial last line, which the next writer cuts off before it appends.
Everything is append-only, so the Hub sync (classifr.data.hub_sync) pushes only new or grown files.
"""

from __future__ import annotations

import hashlib
import io
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

from filelock import FileLock

from classifr.core.errors import ClassifrError, LabelError
from classifr.core.images import ImageLimits, LoadedImage, read_image
from classifr.core.labels import normalize_label

logger = logging.getLogger(__name__)

SOURCES = ("import", "upload", "correction", "confirmation")
FEEDBACK_SOURCES = ("correction", "confirmation")
SPLITS = ("train", "test")
TEST_PERCENT = 15  # share of images held out for evaluation, chosen by hash
ANONYMOUS = "anonymous"
MAX_CONTRIBUTOR_LENGTH = 96
NEW_CATEGORY = "New category…"  # the UI's choice for "create one"; never a label itself
CHUNK_SIZE = 64  # images per lock acquisition in add_many: other writers are never kept waiting long

# Stored file suffix per Pillow format. Formats that `datasets`' imagefolder does not list (AVIF)
# are stored re-encoded as PNG, so load_dataset sees every image a row points to.
_SUFFIXES = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tiff"}
# Sidecar files that are not part of the data (never synced to the Hub).
LOCK_NAME = ".lock"
TMP_DIR = ".tmp"


def split_of(sha256: str) -> str:
    """`test` for about 15% of images, `train` for the rest; fixed by the image's hash."""
    return "test" if int(sha256[:8], 16) % 100 < TEST_PERCENT else "train"


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
    by_split: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class ProjectDataset:
    """The images and labels contributors gave to one Classifr project.

    One instance per process is enough and it may be shared by threads; other processes (the CLI
    next to the app) may write to the same folder at the same time. `write_guard` is an extra
    lock held around every write, e.g. the Hub sync's lock while it lists files to push.
    """

    def __init__(self, root: Path, *, limits: ImageLimits = ImageLimits(), lock_timeout: float = 120.0) -> None:
        self.root = Path(root)
        self.limits = limits
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / TMP_DIR).mkdir(exist_ok=True)
        self._file_lock = FileLock(str(self.root / LOCK_NAME), timeout=lock_timeout)
        self._thread_lock = threading.RLock()
        self.write_guard: Callable[[], ContextManager[Any]] = nullcontext
        self._rows: list[Row] = []
        self._keys: set[tuple[str, str]] = set()  # (sha256, label casefolded)
        self._labels_of: dict[str, list[str]] = defaultdict(list)  # sha256 -> labels, in order
        self._row_labels: dict[str, str] = {}  # casefolded label -> its first spelling in a row
        self._offset = 0  # bytes of metadata.jsonl already in memory
        self._categories: dict[str, Category] = {}  # casefolded name -> category
        self._categories_offset = 0

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
            for row in self._rows:
                entry = stats.setdefault(row.label.casefold(), CategoryStats(row.label, row.label.casefold() not in known_keys))
                entry.total += 1
                entry.by_source[row.source] = entry.by_source.get(row.source, 0) + 1
                entry.by_split[row.split] = entry.by_split.get(row.split, 0) + 1
        return sorted(stats.values(), key=lambda s: s.name.casefold())

    def conflicts(self) -> list[dict[str, Any]]:
        """Images given more than one label (kept, for a maintainer to review)."""
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
        is `rejected` with the reason and the others go on. `on_result` is called once per image,
        in order (for progress bars).
        """
        if source not in SOURCES:
            raise ClassifrError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
        who = normalize_contributor(contributor)
        known = list(known)
        results: list[AddResult] = []
        for chunk in _chunks(examples, CHUNK_SIZE):
            prepared = [self._prepare(example, source) for example in chunk]  # decode outside the lock
            with self._locked(write=True):
                chunk_results = self._write(prepared, source, who, known)
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
        except ClassifrError as err:
            return AddResult(name=name, status="rejected", reason=str(err))
        data, suffix = _stored_bytes(loaded)
        return _Prepared(name=name, label=label, data=data, suffix=suffix, feedback=example.feedback)

    def _write(self, prepared: Sequence[_Prepared | AddResult], source: str, who: str, known: list[str]) -> list[AddResult]:
        results: list[AddResult] = []
        new_rows: list[Row] = []
        for item in prepared:
            if isinstance(item, AddResult):
                results.append(item)
                continue
            try:
                label = self._label(item.label, who, known)
            except LabelError as err:
                results.append(AddResult(name=item.name, status="rejected", reason=str(err)))
                continue
            sha = _sha256(item.data)
            others = tuple(l for l in self._labels_of.get(sha, []) if l.casefold() != label.casefold())
            if (sha, label.casefold()) in self._keys:
                results.append(AddResult(item.name, "duplicate", label, sha, split_of(sha), conflicts=others))
                continue
            file_name = self._store_image(item.data, sha, item.suffix)
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
            new_rows.append(row)
            self._remember(row)
            if others:
                logger.warning("image %s now has labels %s and %r (kept as a conflict)", sha[:12], others, label)
            results.append(AddResult(item.name, "added", label, sha, row.split, conflicts=others))
        if new_rows:
            self._append_lines(self.metadata_path, [r.to_json() for r in new_rows], offset_attr="_offset")
        return results

    def _label(self, name: str, contributor: str, known: list[str]) -> str:
        """The existing spelling of `name`, or a new category created for it."""
        existing = self.resolve_label(name, known)
        if existing is not None:
            return existing
        return self._append_category(validate_category(name), contributor).name

    def _store_image(self, data: bytes, sha: str, suffix: str) -> str:
        """Write the image once, atomically; the relative file name the row points to."""
        relative = f"images/{sha[:2]}/{sha}{suffix}"
        path = self.root / relative
        if path.exists():
            return relative
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.root / TMP_DIR / f"{sha}{suffix}.{os.getpid()}.{threading.get_ident()}"
        with open(temporary, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
        _fsync_dir(path.parent)
        return relative

    def _append_category(self, name: str, contributor: str) -> Category:
        category = Category(name=name, created_at=_now(), contributor=contributor)
        self._append_lines(self.categories_path, [asdict(category)], offset_attr="_categories_offset")
        self._categories[name.casefold()] = category
        logger.info("new category %r by %s", name, contributor)
        return category

    def _append_lines(self, path: Path, items: list[dict[str, Any]], *, offset_attr: str) -> None:
        """Append complete lines with one write and fsync; cut off a torn last line first."""
        payload = "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items).encode()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size > getattr(self, offset_attr):  # a torn tail that _refresh could not parse
                logger.warning("cutting off a partial last line of %s (%d bytes)", path.name, size - getattr(self, offset_attr))
                os.ftruncate(fd, getattr(self, offset_attr))
            os.write(fd, payload)
            os.fsync(fd)
            setattr(self, offset_attr, os.fstat(fd).st_size)
        finally:
            os.close(fd)

    def _refresh(self) -> None:
        """Read the lines other writers appended since the last look (the files only grow)."""
        for item in _new_lines(self.metadata_path, self, "_offset", self._reset_rows):
            self._remember(Row.from_json(item))
        for item in _new_lines(self.categories_path, self, "_categories_offset", self._categories.clear):
            category = Category(**{k: item.get(k) for k in ("name", "created_at", "contributor")})
            self._categories.setdefault(category.name.casefold(), category)

    def _reset_rows(self) -> None:
        self._rows, self._keys, self._labels_of, self._row_labels = [], set(), defaultdict(list), {}

    def _remember(self, row: Row) -> None:
        self._rows.append(row)
        self._keys.add((row.sha256, row.label.casefold()))
        self._row_labels.setdefault(row.label.casefold(), row.label)
        if row.label not in self._labels_of[row.sha256]:
            self._labels_of[row.sha256].append(row.label)


@dataclass(frozen=True)
class _Prepared:
    name: str
    label: str
    data: bytes
    suffix: str
    feedback: Feedback | None


def _new_lines(path: Path, owner: Any, offset_attr: str, reset: Callable[[], None]) -> list[dict[str, Any]]:
    """Complete JSON lines past the owner's offset; advances the offset past them only."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        size = 0
    offset = getattr(owner, offset_attr)
    if size < offset:  # replaced or cut by hand: read it again from the start
        reset()
        offset = 0
    if size == offset:
        setattr(owner, offset_attr, offset)
        return []
    with open(path, "rb") as handle:
        handle.seek(offset)
        data = handle.read(size - offset)
    complete = data[: data.rfind(b"\n") + 1]  # a torn last line stays unread
    items = []
    for line in complete.splitlines():
        if not line.strip():
            continue
        try:
            items.append(json.loads(line))
        except json.JSONDecodeError:
            logger.error("skipping an unreadable line in %s at byte %d: %r", path, offset, line[:80])
    setattr(owner, offset_attr, offset + len(complete))
    return items


def _stored_bytes(loaded: LoadedImage) -> tuple[bytes, str]:
    """The bytes to store and their suffix: the file as received, or PNG when there is none."""
    suffix = _SUFFIXES.get(loaded.format or "")
    if loaded.data is not None and suffix is not None:
        return loaded.data, suffix
    buffer = io.BytesIO()
    loaded.image.save(buffer, format="PNG")
    return buffer.getvalue(), ".png"


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


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _describe(source: Any) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.path.basename(os.fspath(source)) or str(source)
    return f"<{type(source).__name__}>"
