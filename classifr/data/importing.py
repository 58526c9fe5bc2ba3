"""Import a labelled image dataset into the project dataset (`classifr dataset import SOURCE`).

A source is a local imagefolder (`<label>/<image>` folders, possibly under split folders, or a
folder with metadata.jsonl/csv), one or more Parquet files or a folder of them, or a Hub dataset
id `owner/name`. All three are read through `datasets.load_dataset`, so one code path handles
features, splits and ClassLabel names whatever the source.

The image column is read with `Image(decode=False)`: ProjectDataset gets the original encoded
bytes and names the stored file by their hash, so an image imported twice, or imported and also
uploaded, is stored once. Decoding and re-encoding here would change the bytes and defeat that.

The source's own split assignment (train/validation/test) is not kept: ProjectDataset puts each
image in train or test by its hash, so the same photo lands in the same split however it arrives.
"""

from __future__ import annotations

import glob
import itertools
import logging
import os
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import datasets
from datasets.packaged_modules.imagefolder.imagefolder import ImageFolder
from tqdm import tqdm

from classifr.data.dataset import AddResult, Example, ProjectDataset
from classifr.core.errors import ClassifrError

logger = logging.getLogger(__name__)

IMAGE_NAMES = ("image", "img", "picture", "photo")  # looked for when no column is an Image feature
LABEL_NAMES = ("label", "labels", "category", "class", "fine_label", "coarse_label")  # in this order
MAX_REJECTED_EXAMPLES = 20
SAMPLE_SEED = 0  # which rows `limit` picks; fixed, so a rerun picks the same ones
METADATA_NAMES = ("metadata.jsonl", "metadata.csv")
SPLIT_NOTE = "the source's split assignment is not kept: each image goes to train or test by its hash"
# Why an imagefolder may come without labels: `datasets` infers them from folder names only then.
IMAGEFOLDER_LABELS_HINT = (
    " (imagefolder takes labels from folder names only when every image is in a <label>/ folder,"
    " all at one depth, with at least two labels)"
)
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
# A missing "data/train.parquet" is a typo in a path, not a Hub id (repo names may have dots).
_FILE_SUFFIXES = frozenset({".parquet", ".arrow", ".csv", ".json", ".jsonl", ".zip", ".tar", ".gz", ".jpg", ".png"})
_STRING_TYPES = ("string", "large_string")
_MAX_REASON = 300  # characters of a loader's error message kept in ours

Source = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]  # see _resolve_source


@dataclass(frozen=True)
class ImportReport:
    """What an import did: counts, the first rejections with reasons, and added images per label."""

    source: str
    kind: str  # "imagefolder" | "parquet" | "hub"
    image_column: str
    label_column: str
    splits: tuple[str, ...]  # the source splits that rows were read from, in order
    total: int  # rows read from the source (at most `limit`)
    added: int
    duplicates: int  # already in the project dataset with the same label
    rejected: int
    conflicts: int  # added images that already had another label (kept, for review)
    rejected_examples: tuple[dict[str, str], ...]  # the first 20, as {"name", "reason"}
    labels: dict[str, int]  # added images per label
    seconds: float
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("splits", "rejected_examples", "notes"):
            data[key] = list(data[key])
        return data


@dataclass(frozen=True)
class _Source:
    """A resolved SOURCE: how to call the loader, and how to name its rows in messages."""

    kind: str
    display: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)
    root: Path | None = None  # a local folder: row names are paths relative to it


@dataclass(frozen=True)
class _Columns:
    image: str
    label: str
    label_names: tuple[str, ...] | None  # ClassLabel names, or None for a string column


def import_dataset(
    dataset: ProjectDataset,
    source: Source,
    *,
    image_column: str | None = None,
    label_column: str | None = None,
    split: str | None = None,
    limit: int | None = None,
    contributor: str | None = None,
    known: Iterable[str] = (),
    cache_dir: Path | None = None,
    loader: Callable[..., Any] | None = None,
    progress: bool = True,
) -> ImportReport:
    """Add every image of `source` to `dataset` with source="import"; return what happened.

    `source`: a local folder (imagefolder or Parquet files), a Parquet file, a list of them or a
    quoted glob, or a Hub id `owner/name`. `split`: import only this split (default: all).
    `limit`: import at most this many rows, a fixed random sample of them when the source has
    more. `cache_dir`: where `datasets` keeps its Arrow cache (and Hub downloads). `loader`:
    stands in for `datasets.load_dataset` (tests).
    A bad image or label becomes a rejected row and the import goes on; a source that cannot be
    read, or whose columns cannot be told apart, raises ClassifrError before anything is added.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ClassifrError(f"limit must be a positive number of images, got {limit!r}")
    started = time.monotonic()
    resolved = _resolve_source(source)
    with _datasets_progress(progress):
        splits = _select_split(_load(resolved, cache_dir, loader), split, resolved)
    columns = _detect_columns(splits, image_column, label_column, resolved)
    splits = {name: _prepare_split(ds, columns) for name, ds in splits.items()}
    logger.info(
        "importing %s (%s): splits %s, image column %r, label column %r",
        resolved.display, resolved.kind, ", ".join(splits), columns.image, columns.label,
    )
    with _progress_bar(_total(splits, limit), progress) as bar:
        tally = _Tally(bar)
        examples = _examples(splits, columns, resolved, limit, tally)
        dataset.add_many(examples, source="import", contributor=contributor, known=known, on_result=tally.record)
    report = tally.report(resolved, columns, time.monotonic() - started)
    _log_report(report)
    return report


# --- the source ----------------------------------------------------------------------------------


def _resolve_source(source: Source) -> _Source:
    """Decide the kind of SOURCE: a local folder or file first, then a glob, then a Hub id."""
    if isinstance(source, Sequence) and not isinstance(source, str):
        return _parquet_files([Path(item).expanduser() for item in source], ", ".join(map(os.fspath, source)))
    text = os.fspath(source)
    path = Path(text).expanduser()
    if path.is_dir():
        return _folder_source(path, text)
    if path.exists():
        return _parquet_files([path], text)
    if glob.has_magic(text):
        matches = sorted(glob.glob(os.path.expanduser(text)))
        if matches:
            return _parquet_files([Path(match) for match in matches], text)
    if _HUB_ID.fullmatch(text) and Path(text).suffix.lower() not in _FILE_SUFFIXES:
        return _Source("hub", text, (text,))
    raise ClassifrError(f"no such file or folder: {text!r} (and it is not a Hub dataset id like owner/name)")


def _folder_source(path: Path, display: str) -> _Source:
    """An imagefolder when the folder has images or metadata; else a folder of Parquet files."""
    has_parquet = False
    image_suffixes = _image_suffixes()
    for _, subfolders, files in os.walk(path):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]  # .cache, .tmp, .git
        for name in files:
            if name in METADATA_NAMES or Path(name).suffix.lower() in image_suffixes:
                return _Source("imagefolder", display, ("imagefolder",), {"data_dir": str(path)}, root=path)
            has_parquet = has_parquet or name.endswith(".parquet")
    if has_parquet:
        return _Source("parquet", display, ("parquet",), {"data_dir": str(path)}, root=path)
    raise ClassifrError(f"{display!r} has no images and no Parquet files")


def _parquet_files(paths: list[Path], display: str) -> _Source:
    if not paths:
        raise ClassifrError("no source given: name a folder, Parquet files or a Hub id owner/name")
    for path in paths:
        if not path.exists():
            raise ClassifrError(f"no such file: {str(path)!r}")
        if not path.is_file() or path.suffix.lower() != ".parquet":
            raise ClassifrError(f"{str(path)!r} is not a Parquet file; give a folder, Parquet files or a Hub id")
    return _Source("parquet", display, ("parquet",), {"data_files": [str(p) for p in paths]})


def _image_suffixes() -> frozenset[str]:
    """The file suffixes `datasets`' imagefolder reads (so both agree on what an image is)."""
    return frozenset(ImageFolder.EXTENSIONS)


def _load(resolved: _Source, cache_dir: Path | None, loader: Callable[..., Any] | None) -> dict[str, Any]:
    """Every split of the source, by name; ClassifrError in one line when it cannot be loaded."""
    loader = loader or datasets.load_dataset
    cache = str(cache_dir) if cache_dir is not None else None
    try:
        loaded = loader(*resolved.args, **resolved.kwargs, cache_dir=cache)
    except ClassifrError:
        raise
    except Exception as err:  # datasets, fsspec, pyarrow and the Hub client raise many kinds
        what = f"{resolved.display!r} as {resolved.kind}"
        if resolved.kind == "hub":
            what = f"the Hub dataset {resolved.display!r}"
        raise ClassifrError(f"could not load {what}: {_one_line(err)}") from err
    if isinstance(loaded, Mapping):  # DatasetDict, IterableDatasetDict
        return dict(loaded)
    return {str(getattr(loaded, "split", None) or "train"): loaded}


def _select_split(splits: dict[str, Any], split: str | None, resolved: _Source) -> dict[str, Any]:
    if not splits:
        raise ClassifrError(f"{resolved.display!r} has no data")
    if split is None:
        return splits
    if split not in splits:
        raise ClassifrError(f"{resolved.display!r} has no split {split!r}; its splits are {', '.join(splits)}")
    return {split: splits[split]}


@contextmanager
def _datasets_progress(enabled: bool) -> Iterator[None]:
    """Silence `datasets`' own bars ("Generating train split") for a quiet import, then restore."""
    was_disabled = datasets.are_progress_bars_disabled()
    if not enabled and not was_disabled:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not enabled and not was_disabled:
            datasets.enable_progress_bars()


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or "no details"
    if len(text) > _MAX_REASON:
        text = text[: _MAX_REASON - 1] + "…"
    return f"{type(err).__name__}: {text}"


# --- columns -------------------------------------------------------------------------------------


def _detect_columns(splits: dict[str, Any], image: str | None, label: str | None, resolved: _Source) -> _Columns:
    """The image and label columns, from the first split's features; every split must have them."""
    features = next(iter(splits.values())).features or {}
    image_name = image or _find_image_column(features, resolved)
    label_name = label or _find_label_column(features, resolved)
    for flag, name in (("--image-column", image_name), ("--label-column", label_name)):
        if name not in features:
            raise ClassifrError(f"{flag} {name!r} is not a column of {resolved.display!r}; {_columns_text(features)}")
    if not _holds_images(features[image_name]):
        raise ClassifrError(
            f"image column {image_name!r} holds {_feature_text(features[image_name])}, not images; "
            f"choose another with --image-column: {_columns_text(features)}"
        )
    if image_name == label_name:
        raise ClassifrError(f"the image and label columns must differ, both are {image_name!r}")
    for split_name, ds in splits.items():
        missing = [name for name in (image_name, label_name) if name not in (ds.features or {})]
        if missing:
            raise ClassifrError(f"split {split_name!r} of {resolved.display!r} has no column {missing[0]!r}")
    return _Columns(image_name, label_name, _label_names(features[label_name], label_name))


def _find_image_column(features: Mapping[str, Any], resolved: _Source) -> str:
    found = [name for name, feature in features.items() if isinstance(feature, datasets.Image)]
    if len(found) > 1:
        raise ClassifrError(
            f"{resolved.display!r} has several image columns; choose one with --image-column: {_columns_text(features)}"
        )
    found = found or _named(features, IMAGE_NAMES)
    if not found:
        raise ClassifrError(
            f"{resolved.display!r} has no image column; name it with --image-column: {_columns_text(features)}"
        )
    return found[0]


def _find_label_column(features: Mapping[str, Any], resolved: _Source) -> str:
    """A ClassLabel feature (the preferred name first when there are several), else a string
    column with a usual label name."""
    class_labels = [name for name, feature in features.items() if isinstance(feature, datasets.ClassLabel)]
    if len(class_labels) == 1:
        return class_labels[0]
    if class_labels:
        preferred = _named({name: features[name] for name in class_labels}, LABEL_NAMES)
        if preferred:
            return preferred[0]
        raise ClassifrError(
            f"{resolved.display!r} has several label columns; choose one with --label-column: {_columns_text(features)}"
        )
    strings = {name: f for name, f in features.items() if isinstance(f, datasets.Value) and f.dtype in _STRING_TYPES}
    found = _named(strings, LABEL_NAMES)
    if found:
        return found[0]
    hint = IMAGEFOLDER_LABELS_HINT if resolved.kind == "imagefolder" else ""
    raise ClassifrError(
        f"{resolved.display!r} has no label column{hint}; name it with --label-column: {_columns_text(features)}"
    )


def _holds_images(feature: Any) -> bool:
    """An Image feature, encoded bytes, file paths, or a {bytes, path} struct from plain Parquet."""
    if isinstance(feature, datasets.Image):
        return True
    if isinstance(feature, datasets.Value):
        return feature.dtype in ("binary", "large_binary", *_STRING_TYPES)
    return isinstance(feature, Mapping) and ("bytes" in feature or "path" in feature)


def _named(features: Mapping[str, Any], names: Sequence[str]) -> list[str]:
    """Columns whose name (ignoring case) is one of `names`, in the order of `names`."""
    by_key = {name.casefold(): name for name in features}
    return [by_key[name] for name in names if name in by_key]


def _label_names(feature: Any, column: str) -> tuple[str, ...] | None:
    """ClassLabel names (rows hold ids), or None when rows hold the label strings themselves."""
    if isinstance(feature, datasets.ClassLabel):
        return tuple(feature.names)
    if isinstance(feature, datasets.Value) and feature.dtype in _STRING_TYPES:
        return None
    kind = getattr(feature, "dtype", None) or type(feature).__name__
    raise ClassifrError(
        f"label column {column!r} holds {kind}, not label names (a string column or a ClassLabel "
        "with names is needed); choose another with --label-column"
    )


def _columns_text(features: Mapping[str, Any]) -> str:
    if not features:
        return "it has no columns"
    parts = [f"{name} ({_feature_text(feature)})" for name, feature in features.items()]
    return "its columns are " + ", ".join(parts)


def _feature_text(feature: Any) -> str:
    dtype = getattr(feature, "dtype", None)
    name = type(feature).__name__
    return dtype if name == "Value" and dtype else name


def _prepare_split(ds: Any, columns: _Columns) -> Any:
    """Only the two columns (others may be costly to decode), images as their encoded bytes."""
    ds = ds.select_columns([columns.image, columns.label])
    if isinstance(ds.features[columns.image], datasets.Image):
        ds = ds.cast_column(columns.image, datasets.Image(decode=False))
    return ds


# --- rows ----------------------------------------------------------------------------------------


def _examples(
    splits: dict[str, Any], columns: _Columns, resolved: _Source, limit: int | None, tally: _Tally
) -> Iterator[Example]:
    """One Example per row, lazily, for at most `limit` rows. A row without an image or a usable
    label is tallied as rejected here (add_many never sees it), and the import goes on."""
    for split_name, index, row in itertools.islice(_rows(splits, limit, tally), limit):
        image, path = _image_source(row[columns.image])
        name = _row_name(resolved, split_name, index, path)
        label, problem = _label_of(row[columns.label], columns)
        if problem is None and image is None:
            problem = "has no image (neither bytes nor a path)"
        if problem is None:
            yield Example(source=image, label=label, name=name)
        else:
            tally.record(AddResult(name=name, status="rejected", reason=f"{name} {problem}"))


def _rows(splits: dict[str, Any], limit: int | None, tally: _Tally) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """(split, row index, row) for every row to import, in the source's order."""
    plan = _sample(splits, limit)
    if plan is not None:
        tally.notes.append(f"limit {limit}: a fixed random sample of the source's {_total(splits, None)} rows")
    for split_name, ds in splits.items():
        indices = plan.get(split_name, []) if plan is not None else None
        if indices == []:
            continue
        tally.splits.append(split_name)
        for index, row in enumerate(ds) if indices is None else zip(indices, ds.select(indices), strict=True):
            yield split_name, index, row


def _sample(splits: dict[str, Any], limit: int | None) -> dict[str, list[int]] | None:
    """Row indices per split when `limit` is below the row count: a random sample with a fixed
    seed, since sources are often sorted by label (CIFAR-10 is) and the first rows would all be
    one label. The same every run, so a second import finds the same images (duplicates). None:
    read every row (up to `limit` where lengths are unknown)."""
    total = _total(splits, None)
    if limit is None or total is None or limit >= total:
        return None
    chosen = sorted(random.Random(SAMPLE_SEED).sample(range(total), limit))
    plan: dict[str, list[int]] = {}
    offset = 0
    for name, ds in splits.items():
        plan[name] = [i - offset for i in chosen if offset <= i < offset + len(ds)]
        offset += len(ds)
    return plan


def _image_source(value: Any) -> tuple[Any, str | None]:
    """What to read (the original encoded bytes when the row has them, else the file path; None
    for neither) and the file path the row names, if any."""
    if isinstance(value, Mapping):
        data, path = value.get("bytes"), value.get("path") or None
        return (data if data else path), path
    return value, (value if isinstance(value, str) else None)


def _label_of(value: Any, columns: _Columns) -> tuple[str, str | None]:
    """The label string and None, or "" and why the row has no usable label. The label itself is
    validated by ProjectDataset, which rejects a bad one for this image only."""
    if value is None or (columns.label_names is not None and value == -1):  # -1: ClassLabel's "no label"
        return "", "has no label"
    if columns.label_names is None:
        return value, None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < len(columns.label_names):
        return "", f"has label id {value!r}, not one of the {len(columns.label_names)} classes of {columns.label!r}"
    return columns.label_names[value], None


def _row_name(resolved: _Source, split: str, index: int, path: str | None) -> str:
    """How messages name a row: the path inside a local folder, else split[index] and file name;
    control characters escaped, since folder names are data too and messages are one line."""
    name = f"{split}[{index}]" + (f" {os.path.basename(path)}" if path else "")
    if path and resolved.root is not None:
        try:
            name = Path(path).relative_to(resolved.root).as_posix()
        except ValueError:
            pass
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in name)


def _total(splits: dict[str, Any], limit: int | None) -> int | None:
    """Rows the import will read, when every split knows its length (streamed ones do not)."""
    try:
        total = sum(len(ds) for ds in splits.values())
    except TypeError:
        return limit
    return total if limit is None else min(total, limit)


# --- results -------------------------------------------------------------------------------------


@contextmanager
def _progress_bar(total: int | None, enabled: bool) -> Iterator[Any]:
    bar = tqdm(total=total, unit="img", desc="importing", file=sys.stderr, disable=not enabled, dynamic_ncols=True)
    try:
        yield bar
    finally:
        bar.close()


class _Tally:
    """Counts results as they arrive (add_many's on_result), so the import keeps no list of rows."""

    def __init__(self, bar: Any) -> None:
        self.bar = bar
        self.statuses: Counter[str] = Counter()
        self.labels: Counter[str] = Counter()
        self.conflicts = 0
        self.rejected_examples: list[dict[str, str]] = []
        self.splits: list[str] = []
        self.notes: list[str] = [SPLIT_NOTE]

    def record(self, result: AddResult) -> None:
        self.statuses[result.status] += 1
        if result.status == "added":
            self.labels[result.label or ""] += 1
            self.conflicts += bool(result.conflicts)
        elif result.status == "rejected":
            logger.debug("rejected %s: %s", result.name, result.reason)
            if len(self.rejected_examples) < MAX_REJECTED_EXAMPLES:
                self.rejected_examples.append({"name": result.name, "reason": result.reason or ""})
        self.bar.update(1)

    def report(self, resolved: _Source, columns: _Columns, seconds: float) -> ImportReport:
        return ImportReport(
            source=resolved.display,
            kind=resolved.kind,
            image_column=columns.image,
            label_column=columns.label,
            splits=tuple(self.splits),
            total=sum(self.statuses.values()),
            added=self.statuses["added"],
            duplicates=self.statuses["duplicate"],
            rejected=self.statuses["rejected"],
            conflicts=self.conflicts,
            rejected_examples=tuple(self.rejected_examples),
            labels=dict(sorted(self.labels.items())),
            seconds=round(seconds, 3),
            notes=tuple(self.notes),
        )


def _log_report(report: ImportReport) -> None:
    logger.info(
        "imported %s: %d rows, %d added, %d duplicates, %d rejected in %.1f s",
        report.source, report.total, report.added, report.duplicates, report.rejected, report.seconds,
    )
    if report.rejected:
        example = report.rejected_examples[0]["reason"]
        logger.warning("%d images of %s were rejected, e.g. %s", report.rejected, report.source, example)
    if report.conflicts:
        logger.warning("%d imported images already had another label (kept as conflicts)", report.conflicts)
