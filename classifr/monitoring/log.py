"""The prediction log: every prediction the app serves, written to SQLite off the request path.

Design
------
* One SQLite file in WAL mode (`synchronous=NORMAL`): readers never wait for the writer and the
  writer never waits for readers; a power cut can lose the last transactions, never corrupt the file.
* `PredictionLog.log()` only validates the record and puts it on a bounded queue: no SQLite call,
  no lock held against I/O, no waiting on the caller's (request) thread. A full queue drops the
  record and counts it (`dropped`) rather than slowing down predictions.
* One daemon writer thread owns the only write connection. It blocks on the queue, drains up to
  `BATCH_SIZE` items and writes them in one transaction (one fsync-free WAL append per batch).
  Feedback goes through the same queue, so it is applied after the prediction it refers to.
* Retention bounds the file: only the newest `max_images` thumbnails are kept, and embeddings of
  the newest `max_embeddings` predictions. "Newest" is write order (rowid): predictions are only
  appended and thumbnails only deleted oldest first, so rowids have no gaps and the newest K rows
  are those above `max(rowid) - K`, found without a scan (a row deleted by hand only makes K
  smaller). Retention runs when enough rows arrived since the last pass and at `flush()`, and
  only in an instance that wrote rows: one opened to read never deletes anything.
* Every query opens its own short-lived connection, so any number of threads (UI, API, CLI in
  another process) can read while the writer writes.
* The embeddings sit inline in `predictions` (about 2.5 KB a row), so reading a row costs a page.
  The aggregate queries therefore read only covering indexes (`version, time, score, ...`) and
  never the rows themselves; the review queue starts from the (bounded) `images` table.

Drift of the top-1 confidence against a reference (an eval split, or the first predictions of a
version) is measured with the population stability index; see `drift_report`.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import numbers
import queue
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from classifr.core.errors import ClassifrError

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
VARIANTS = ("production", "candidate", "direct")
SOURCES = ("ui", "api", "cli")
FEEDBACK_KINDS = ("confirmed", "corrected")
BATCH_SIZE = 512  # items per write transaction
BATCH_LINGER_S = 0.05  # how long the writer waits for a batch to fill; rows reach SQLite within this
WRITE_ATTEMPTS = 2  # a failed batch is retried once, then dropped and counted in `failed`
DROP_WARNING_INTERVAL_S = 10.0
MAX_THUMBNAIL_BYTES = 256 * 1024  # a thumbnail is small; this bounds the memory a full queue can hold
MAX_TEXT_LENGTH = 200
READ_TIMEOUT_S = 30.0
PSI_THRESHOLD = 0.2
PSI_FLOOR = 1e-4
FLOAT16_MAX = float(np.finfo(np.float16).max)

# Columns of `predictions` written by the writer (and by tests that build large logs directly).
PREDICTION_COLUMNS = (
    "id", "time", "version", "variant", "source", "label", "score", "topk", "latency_ms",
    "image_sha256", "width", "height", "nbytes", "embedding",
)  # fmt: skip
INSERT_PREDICTION_SQL = (
    f"INSERT OR IGNORE INTO predictions ({', '.join(PREDICTION_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(PREDICTION_COLUMNS))})"
)
# An image is stored only with a prediction inserted by this very batch (rowid above the batch's
# start), so a duplicate id can never attach a new image to an old row.
_INSERT_IMAGE_SQL = (
    "INSERT OR IGNORE INTO images (prediction_id, jpeg) "
    "SELECT ?1, ?2 WHERE (SELECT rowid FROM predictions WHERE id = ?1) > ?3"
)
# Columns the aggregate queries read; both window indexes carry them all (covering indexes).
_COVERED = "score, latency_ms, feedback, variant, source, label"

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS predictions (
        id TEXT PRIMARY KEY,
        time REAL NOT NULL,
        version TEXT NOT NULL,
        variant TEXT NOT NULL,
        source TEXT NOT NULL,
        label TEXT NOT NULL,          -- top-1
        score REAL NOT NULL,          -- top-1
        topk TEXT NOT NULL,           -- JSON [[label, score], ...], best first
        latency_ms REAL NOT NULL,
        image_sha256 TEXT NOT NULL,
        width INTEGER,
        height INTEGER,
        nbytes INTEGER,
        embedding BLOB,               -- float16 bytes, NULL once older than max_embeddings
        feedback TEXT,                -- NULL, 'confirmed' or 'corrected'
        true_label TEXT,
        feedback_time REAL
    )""",
    "CREATE TABLE IF NOT EXISTS images (prediction_id TEXT PRIMARY KEY, jpeg BLOB NOT NULL)",
    # Time windows over all versions: summary, volume, labels, histogram, scores.
    f"CREATE INDEX IF NOT EXISTS predictions_time ON predictions (time, version, {_COVERED})",
    # The same for one version, and summary's GROUP BY version without a sort.
    f"CREATE INDEX IF NOT EXISTS predictions_version_time ON predictions (version, time, {_COVERED})",
    # Feedback by image hash goes to the most recent prediction of that image.
    "CREATE INDEX IF NOT EXISTS predictions_image ON predictions (image_sha256, time)",
    # Galleries (newest feedback first) and the feedback confusion read only rows with feedback.
    "CREATE INDEX IF NOT EXISTS predictions_feedback ON predictions (feedback, feedback_time) "
    "WHERE feedback IS NOT NULL",
    # The newest rows that still have an embedding (retention keeps them few).
    "CREATE INDEX IF NOT EXISTS predictions_embedding ON predictions (time) WHERE embedding IS NOT NULL",
)


class PredictionLogError(ClassifrError, OSError):
    """The prediction log file cannot be opened (not a database, or a newer schema)."""


class MonitoringValueError(ClassifrError, ValueError):
    """A record or a query argument has a bad value; the message names it."""


@dataclass(frozen=True)
class LoggedPrediction:
    """One served prediction, as the service hands it to `PredictionLog.log()`."""

    id: str  # uuid4 hex, made by the caller
    time: float  # unix seconds
    version: str  # model version, e.g. "v3"
    variant: str  # one of VARIANTS
    source: str  # one of SOURCES
    labels: tuple[str, ...]  # top-k labels, best first
    scores: tuple[float, ...]  # same length, each in [0, 1]
    latency_ms: float
    # Hashing a 12-megapixel JPEG or encoding a thumbnail takes milliseconds: the caller may pass
    # a function instead of the value, and the writer thread calls it, off the request path.
    image_sha256: str | Callable[[], str]
    width: int
    height: int
    nbytes: int
    embedding: np.ndarray | None = None  # 1-D pooled backbone features; stored as float16
    thumbnail: bytes | Callable[[], bytes | None] | None = None  # JPEG; stored only when the log stores images


@dataclass(frozen=True)
class DriftReport:
    """How far the current top-1 confidences are from a reference; `value` None when too few."""

    statistic: str
    value: float | None
    threshold: float
    alert: bool
    reference: str
    n_reference: int
    n_current: int
    message: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# --- queue items (made on the caller's thread, consumed by the writer) ---------------------------


@dataclass(frozen=True, slots=True)
class _Insert:
    record: LoggedPrediction
    embedding: np.ndarray | None  # a private copy, converted to float16 by the writer
    thumbnail: bytes | Callable[[], bytes | None] | None

    def resolved(self) -> _Insert:
        """The record with its deferred hash and thumbnail computed (on the writer thread)."""
        record, thumbnail = self.record, self.thumbnail
        if callable(record.image_sha256):
            record = replace(record, image_sha256=_check_text("image_sha256", record.image_sha256()))
        if callable(thumbnail):
            try:
                thumbnail = _check_thumbnail(thumbnail())
            except Exception:  # a thumbnail is a convenience: keep the prediction without it
                logger.exception("prediction %s: could not make its thumbnail", record.id)
                thumbnail = None
        return _Insert(record, self.embedding, thumbnail)

    def row(self) -> tuple[Any, ...]:
        r = self.record
        embedding = None if self.embedding is None else self.embedding.astype(np.float16).tobytes()
        topk = json.dumps([[label, float(score)] for label, score in zip(r.labels, r.scores)], separators=(",", ":"))
        return (
            r.id, float(r.time), r.version, r.variant, r.source, r.labels[0], float(r.scores[0]), topk,
            float(r.latency_ms), r.image_sha256, int(r.width), int(r.height), int(r.nbytes), embedding,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Feedback:
    label: str
    kind: str
    prediction_id: str | None
    image_sha256: str | None
    at: float


@dataclass(frozen=True, slots=True)
class _Flush:
    done: threading.Event = field(default_factory=threading.Event)


_STOP = object()


class PredictionLog:
    """The prediction log of one Classifr project; safe to share between threads.

    `log()` and `record_feedback()` return at once; `flush()` waits until what was queued before
    it is written. Use as a context manager, or call `close()` (also run at interpreter exit).
    """

    def __init__(
        self,
        path: Path,
        *,
        store_images: bool = True,
        max_images: int = 2000,
        max_embeddings: int = 20000,
        max_queue: int = 10_000,  # about 25 KB each with an embedding and a thumbnail: 250 MB at most
    ) -> None:
        _check_count("max_images", max_images)
        _check_count("max_embeddings", max_embeddings)
        _check_count("max_queue", max_queue, low=1)
        self.path = Path(path)
        self.store_images = bool(store_images)
        self.max_images = max_images
        self.max_embeddings = max_embeddings
        self.dropped = 0  # records and feedback refused because the queue was full
        self.failed = 0  # queued items lost to write errors (after one retry)
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_queue)
        self._closed = False
        self._close_lock = threading.Lock()
        self._drop_lock = threading.Lock()
        self._last_drop_warning = -math.inf
        # Writer-thread state: rows inserted since the last retention pass, and the rowid below
        # which every embedding is already cleared (so a pass only visits new rows).
        self._retention_every = max(64, min(max_images, max_embeddings) // 10)
        self._since_retention = 0
        self._embedding_floor: int | None = None  # found by the first retention pass
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = _open_for_writing(self.path)
        self._thread = threading.Thread(target=self._run, name=f"prediction-log:{self.path.name}", daemon=True)
        self._thread.start()
        atexit.register(self.close)  # a CLI run that forgets close() still writes its predictions

    # --- writing (caller side) ----------------------------------------------------------------

    def log(self, record: LoggedPrediction) -> None:
        """Queue one prediction; never blocks and never raises for a full queue (it counts a drop).

        Raises MonitoringValueError (a ValueError) for a bad record, RuntimeError once closed."""
        if self._closed:
            raise RuntimeError("prediction log is closed")
        embedding = _check_record(record)
        thumbnail = None
        if self.store_images and record.thumbnail is not None:
            thumbnail = record.thumbnail if callable(record.thumbnail) else _check_thumbnail(record.thumbnail)
        self._put(_Insert(record, embedding, thumbnail))

    def record_feedback(
        self,
        *,
        label: str,
        kind: str,
        prediction_id: str | None = None,
        image_sha256: str | None = None,
        at: float | None = None,
    ) -> None:
        """Queue a confirmation or correction of a prediction, found by id or else by the image's
        hash (its most recent prediction). An unknown target is logged and otherwise ignored."""
        if self._closed:
            raise RuntimeError("prediction log is closed")
        if kind not in FEEDBACK_KINDS:
            raise MonitoringValueError(f"feedback kind must be one of {', '.join(FEEDBACK_KINDS)}, got {kind!r}")
        _check_text("feedback label", label)
        if prediction_id is None and image_sha256 is None:
            raise MonitoringValueError("feedback needs a prediction_id or an image_sha256, got neither")
        for name, value in (("prediction_id", prediction_id), ("image_sha256", image_sha256)):
            if value is not None:
                _check_text(name, value)
        at = time.time() if at is None else _check_number("feedback time", at)
        self._put(_Feedback(label, kind, prediction_id, image_sha256, float(at)))

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued before this call is written and retention has run;
        False when that did not happen within `timeout` seconds."""
        if not self._thread.is_alive():
            return self._queue.empty()
        deadline = time.monotonic() + max(0.0, timeout)
        marker = _Flush()
        try:
            self._queue.put(marker, timeout=max(0.0, timeout))  # a flush may wait; log() never does
        except queue.Full:
            return False
        return marker.done.wait(max(0.0, deadline - time.monotonic()))

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, stop the writer and close the file; later calls do nothing."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        atexit.unregister(self.close)
        if not self.flush(timeout):
            logger.warning("prediction log %s: queued items were not all written within %.0f s", self.path, timeout)
        try:
            self._queue.put(_STOP, timeout=max(0.0, timeout))
        except queue.Full:
            logger.warning("prediction log %s: the writer did not take the stop signal", self.path)
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.warning("prediction log %s: the writer is still busy; its connection stays open", self.path)
        else:
            self._conn.close()

    def __enter__(self) -> PredictionLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _put(self, item: _Insert | _Feedback) -> None:
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self._count_drop()

    def _count_drop(self) -> None:
        with self._drop_lock:
            self.dropped += 1
            now = time.monotonic()
            if now - self._last_drop_warning < DROP_WARNING_INTERVAL_S:
                return
            self._last_drop_warning = now
            dropped = self.dropped
        logger.warning(
            "prediction log %s: the write queue is full (%d items); %d predictions or feedback dropped so far",
            self.path, self._queue.maxsize, dropped,
        )  # fmt: skip

    # --- writing (writer thread) --------------------------------------------------------------

    def _run(self) -> None:
        stop = False
        while not stop:
            batch = self._next_batch()
            stop = any(item is _STOP for item in batch)
            writes = [item for item in batch if isinstance(item, (_Insert, _Feedback))]
            flushes = [item for item in batch if isinstance(item, _Flush)]
            try:
                if writes:
                    self._commit(writes)
                # Only after this instance wrote: one opened just to read (`classifr monitor`,
                # perhaps with default limits) never deletes what the app keeps.
                if self._since_retention and (flushes or stop or self._since_retention >= self._retention_every):
                    self._retain()
            except Exception:  # never let the writer die: later batches may well succeed
                logger.exception("prediction log %s: unexpected error in the writer", self.path)
            finally:
                for marker in flushes:
                    marker.done.set()

    def _next_batch(self) -> list[Any]:
        batch = [self._queue.get()]
        stopping = batch[0] is _STOP
        # Under steady traffic, wait a moment for more rows: one transaction per row costs the
        # predictions running beside it measurably more CPU than one per batch.
        deadline = time.monotonic() + BATCH_LINGER_S
        while stopping or len(batch) < BATCH_SIZE:
            try:
                wait = 0.0 if stopping or isinstance(batch[-1], _Flush) else deadline - time.monotonic()
                item = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            batch.append(item)
            stopping = stopping or item is _STOP  # after stop, take whatever raced in behind it
        return batch

    def _commit(self, writes: list[_Insert | _Feedback]) -> None:
        writes = self._resolve(writes)
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                self._write_batch(self._conn, writes)
                self._conn.execute("COMMIT")
            except Exception:
                _rollback(self._conn)
                logger.exception(
                    "prediction log %s: writing %d items failed (attempt %d of %d)",
                    self.path, len(writes), attempt, WRITE_ATTEMPTS,
                )  # fmt: skip
                continue
            self._since_retention += sum(isinstance(item, _Insert) for item in writes)
            return
        self.failed += len(writes)
        logger.error("prediction log %s: dropped %d items after %d attempts", self.path, len(writes), WRITE_ATTEMPTS)

    def _resolve(self, writes: list[_Insert | _Feedback]) -> list[_Insert | _Feedback]:
        resolved: list[_Insert | _Feedback] = []
        for item in writes:
            try:
                resolved.append(item.resolved() if isinstance(item, _Insert) else item)
            except Exception:
                self.failed += 1
                logger.exception("prediction log %s: dropped a prediction whose image hash failed", self.path)
        return resolved

    def _write_batch(self, conn: sqlite3.Connection, writes: Sequence[_Insert | _Feedback]) -> None:
        """Insert the batch's predictions and apply its feedback, in queue order."""
        start_rowid = conn.execute("SELECT coalesce(max(rowid), 0) FROM predictions").fetchone()[0]
        pending: list[_Insert] = []
        for item in writes:
            if isinstance(item, _Insert):
                pending.append(item)
                continue
            _insert(conn, pending, start_rowid)  # feedback may refer to a row queued just before it
            pending = []
            self._apply_feedback(conn, item)
        _insert(conn, pending, start_rowid)

    def _apply_feedback(self, conn: sqlite3.Connection, item: _Feedback) -> None:
        values = (item.kind, item.label, item.at)
        if item.prediction_id is not None:
            target = f"id {item.prediction_id!r}"
            cursor = conn.execute(
                "UPDATE predictions SET feedback = ?, true_label = ?, feedback_time = ? WHERE id = ?",
                (*values, item.prediction_id),
            )
        else:
            target = f"image {item.image_sha256!r}"
            cursor = conn.execute(
                "UPDATE predictions SET feedback = ?, true_label = ?, feedback_time = ? WHERE rowid = "
                "(SELECT rowid FROM predictions WHERE image_sha256 = ? ORDER BY time DESC, rowid DESC LIMIT 1)",
                (*values, item.image_sha256),
            )
        if cursor.rowcount == 0:
            logger.info("prediction log %s: no prediction with %s; feedback %r ignored", self.path, target, item.kind)

    def _retain(self) -> None:
        """Drop thumbnails beyond the newest `max_images` and embeddings beyond the newest
        `max_embeddings` predictions. Rowids have no gaps (see the module docstring), so both
        cutoffs come from max(rowid) alone and each pass only touches the rows it changes."""
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            newest_image = conn.execute("SELECT max(rowid) FROM images").fetchone()[0]
            if newest_image is not None and newest_image > self.max_images:
                conn.execute("DELETE FROM images WHERE rowid <= ?", (newest_image - self.max_images,))
            newest = conn.execute("SELECT coalesce(max(rowid), 0) FROM predictions").fetchone()[0]
            floor = self._embedding_floor if self._embedding_floor is not None else _embedding_floor(conn)
            cutoff = newest - self.max_embeddings
            if cutoff > floor:
                conn.execute(
                    "UPDATE predictions SET embedding = NULL "
                    "WHERE rowid > ? AND rowid <= ? AND embedding IS NOT NULL",
                    (floor, cutoff),
                )
            conn.execute("COMMIT")
        except Exception:
            _rollback(conn)
            logger.exception("prediction log %s: retention failed; it runs again later", self.path)
            return
        self._embedding_floor = max(floor, cutoff)
        self._since_retention = 0

    # --- reading ------------------------------------------------------------------------------

    @contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        """A connection of its own for one query: readers never share state with the writer.
        One read transaction, so a query made of several statements sees a single snapshot."""
        conn = sqlite3.connect(self.path, timeout=READ_TIMEOUT_S, isolation_level=None)
        try:
            conn.execute("PRAGMA query_only = ON")
            conn.execute("BEGIN")
            yield conn
        finally:
            conn.close()

    def summary(self, *, since: float | None = None, until: float | None = None, low_confidence: float = 0.5) -> dict[str, Any]:
        """Counts, confidence, feedback and latency per model version in [since, until)."""
        low_confidence = _check_probability("low_confidence", low_confidence)
        where, params = _window(None, since, until)
        # Variants and sources are closed sets (checked in log()), so one GROUP BY version counts
        # them all; grouping by version alone follows predictions_version_time's order, no sort.
        counts = ", ".join(
            f"count(CASE WHEN {column} = '{value}' THEN 1 END)"
            for column, values in (("variant", VARIANTS), ("source", SOURCES))
            for value in values
        )
        with self._reader() as conn:
            groups = conn.execute(
                "SELECT version, count(*), total(score), count(CASE WHEN score < :low THEN 1 END), "
                "count(CASE WHEN feedback = 'confirmed' THEN 1 END), count(CASE WHEN feedback = 'corrected' THEN 1 END), "
                f"min(time), max(time), {counts} FROM predictions{where} GROUP BY version",
                {"low": low_confidence, **params},
            ).fetchall()
            by_version = {row[0]: _version_stats(row[1:]) for row in groups}
            for version, entry in by_version.items():
                where_version, params_version = _window(version, since, until)
                rows = conn.execute(f"SELECT latency_ms FROM predictions{where_version}", params_version).fetchall()
                latencies = np.fromiter((row[0] for row in rows), dtype=np.float64, count=len(rows))
                entry["latency_ms"] = _latency_stats(latencies)
        ordered = {version: by_version[version] for version in sorted(by_version, key=_natural_key)}
        return {
            "total": sum(entry["predictions"] for entry in ordered.values()),
            "window": {"since": since, "until": until},
            "by_version": ordered,
        }

    def volume(
        self, *, bucket_s: float, version: str | None = None, since: float | None = None, until: float | None = None
    ) -> list[dict[str, Any]]:
        """Predictions per time bucket (start = floor(time / bucket_s) * bucket_s) and version."""
        if isinstance(bucket_s, bool) or not isinstance(bucket_s, numbers.Real) or not 0 < bucket_s < math.inf:
            raise MonitoringValueError(f"bucket_s must be a positive number of seconds, got {bucket_s!r}")
        where, params = _window(version, since, until)
        # floor() is not in every SQLite build: truncate, then step down for negative fractions.
        bucket = "(CAST(time / :b AS INTEGER) - (CAST(time / :b AS INTEGER) > time / :b))"
        sql = (
            f"SELECT {bucket} AS bucket, version, count(*) FROM predictions{where} "
            "GROUP BY bucket, version ORDER BY bucket, version"
        )
        with self._reader() as conn:
            rows = conn.execute(sql, {"b": float(bucket_s), **params}).fetchall()
        return [{"start": bucket_index * float(bucket_s), "version": v, "predictions": n} for bucket_index, v, n in rows]

    def label_distribution(
        self, *, version: str | None = None, since: float | None = None, until: float | None = None, limit: int = 20
    ) -> list[dict[str, Any]]:
        """The most predicted top-1 labels: count descending, then label."""
        where, params = _window(version, since, until)
        with self._reader() as conn:
            rows = conn.execute(
                f"SELECT label, count(*) AS n FROM predictions{where} GROUP BY label ORDER BY n DESC, label LIMIT :limit",
                {"limit": _check_count("limit", limit), **params},
            ).fetchall()
        return [{"label": label, "predictions": n} for label, n in rows]

    def confidence_histogram(
        self, *, version: str | None = None, since: float | None = None, until: float | None = None, bins: int = 10
    ) -> list[dict[str, Any]]:
        """Top-1 scores in `bins` equal-width bins over [0, 1]; 1.0 falls in the last bin."""
        bins = _check_count("bins", bins, low=1)
        where, params = _window(version, since, until)
        with self._reader() as conn:
            rows = conn.execute(
                f"SELECT min(CAST(score * :bins AS INTEGER), :last) AS bin, count(*) FROM predictions{where} "
                "GROUP BY bin",
                {"bins": bins, "last": bins - 1, **params},
            ).fetchall()
        counts = dict(rows)
        return [{"low": i / bins, "high": (i + 1) / bins, "predictions": counts.get(i, 0)} for i in range(bins)]

    def gallery(self, kind: str, *, version: str | None = None, limit: int = 24) -> list[dict[str, Any]]:
        """Predictions contributors `corrected` (bad) or `confirmed` (good), newest feedback first."""
        if kind not in FEEDBACK_KINDS:
            raise MonitoringValueError(f"gallery kind must be one of {', '.join(FEEDBACK_KINDS)}, got {kind!r}")
        # `+version`: filter the (few) feedback rows instead of walking every row of the version.
        extra, params = (" AND +version = ?", [version]) if version is not None else ("", [])
        with self._reader() as conn:
            rows = conn.execute(
                "SELECT id, time, version, label, score, true_label, feedback_time, "
                "EXISTS (SELECT 1 FROM images WHERE prediction_id = predictions.id) "
                f"FROM predictions WHERE feedback = ?{extra} ORDER BY feedback_time DESC, rowid DESC LIMIT ?",
                (kind, *params, _check_count("limit", limit)),
            ).fetchall()
        keys = ("id", "time", "version", "label", "score", "true_label", "feedback_time", "has_image")
        return [{**dict(zip(keys, row)), "has_image": bool(row[7])} for row in rows]

    def review_queue(self, *, threshold: float = 0.5, version: str | None = None, limit: int = 12) -> list[dict[str, Any]]:
        """Unreviewed predictions with a stored image and a top-1 score below `threshold`,
        lowest score first: what a contributor should look at next."""
        threshold = _check_probability("threshold", threshold)
        extra, params = (" AND p.version = ?", [version]) if version is not None else ("", [])
        # CROSS JOIN keeps `images` outermost: it holds at most max_images rows, however long the log.
        with self._reader() as conn:
            rows = conn.execute(
                "SELECT p.id, p.time, p.version, p.label, p.score, p.topk "
                "FROM images AS i CROSS JOIN predictions AS p ON p.id = i.prediction_id "
                f"WHERE p.score < ? AND p.feedback IS NULL{extra} ORDER BY p.score, p.time DESC, p.id LIMIT ?",
                (threshold, *params, _check_count("limit", limit)),
            ).fetchall()
        keys = ("id", "time", "version", "label", "score")
        return [{**dict(zip(keys, row[:5])), "topk": json.loads(row[5])} for row in rows]

    def image(self, prediction_id: str) -> bytes | None:
        """The stored JPEG thumbnail of a prediction, None when there is none (or no longer)."""
        with self._reader() as conn:
            row = conn.execute("SELECT jpeg FROM images WHERE prediction_id = ?", (prediction_id,)).fetchone()
        return None if row is None else bytes(row[0])

    def prediction(self, prediction_id: str) -> dict[str, Any] | None:
        """One logged prediction (without its embedding), with `has_image`; None if unknown."""
        columns = [c for c in PREDICTION_COLUMNS if c != "embedding"] + ["feedback", "true_label", "feedback_time"]
        with self._reader() as conn:
            row = conn.execute(
                f"SELECT {', '.join(columns)}, "
                "EXISTS (SELECT 1 FROM images WHERE prediction_id = predictions.id) "
                "FROM predictions WHERE id = ?",
                (prediction_id,),
            ).fetchone()
        if row is None:
            return None
        result = dict(zip(columns, row))
        result["topk"] = json.loads(result["topk"])
        result["has_image"] = bool(row[-1])
        return result

    def feedback_confusion(self, *, version: str | None = None) -> list[dict[str, Any]]:
        """(predicted, true) label pairs over predictions with feedback, most frequent first."""
        extra, params = (" AND +version = ?", [version]) if version is not None else ("", [])
        with self._reader() as conn:
            rows = conn.execute(
                f"SELECT label, true_label, count(*) AS n FROM predictions WHERE feedback IS NOT NULL{extra} "
                "GROUP BY label, true_label ORDER BY n DESC, label, true_label",
                params,
            ).fetchall()
        return [{"predicted": predicted, "true": true, "count": n} for predicted, true, n in rows]

    def embeddings(
        self,
        *,
        version: str | None = None,
        versions: Collection[str] | None = None,
        since: float | None = None,
        limit: int = 5000,
        exclude_labels: Collection[str] = (),
        exclude_sha256: Collection[str] = (),
    ) -> tuple[list[str], np.ndarray]:
        """Ids and a float32 matrix [n, d] of the newest predictions that still have an embedding.

        Only rows of `version` (or of any of `versions`) when given. Rows whose top-1 or true label
        is in `exclude_labels` (ignoring case) or whose image is in `exclude_sha256` are skipped,
        and so are rows of another dimension than the newest selected row (another backbone)."""
        limit = _check_count("limit", limit)
        excluded = {label.casefold() for label in exclude_labels}
        excluded_images = set(exclude_sha256)
        where, params = ["embedding IS NOT NULL"], []
        chosen = ([version] if version is not None else []) + list(versions or [])
        if version is not None or versions is not None:
            if not chosen:
                return [], np.zeros((0, 0), np.float32)
            # `+version`: walk the small embedding index, not the whole version
            where.append(f"+version IN ({', '.join('?' * len(chosen))})")
            params.extend(_check_text("version", v) for v in chosen)
        if since is not None:
            where.append("time >= ?")
            params.append(_check_number("since", since))
        ids: list[str] = []
        blobs: list[bytes] = []
        size: int | None = None
        with self._reader() as conn:
            cursor = conn.execute(
                f"SELECT id, label, true_label, image_sha256, embedding FROM predictions WHERE {' AND '.join(where)} "
                "ORDER BY time DESC, rowid DESC",
                params,
            )
            for prediction_id, label, true_label, sha256, blob in cursor:
                if len(ids) >= limit:
                    break
                if label.casefold() in excluded or (true_label is not None and true_label.casefold() in excluded):
                    continue
                if sha256 in excluded_images:
                    continue
                size = len(blob) if size is None else size
                if len(blob) == size and size % 2 == 0 and size > 0:
                    ids.append(prediction_id)
                    blobs.append(blob)
        if not ids:
            return [], np.zeros((0, 0), np.float32)
        matrix = np.frombuffer(b"".join(blobs), dtype=np.float16).reshape(len(ids), -1)
        return ids, matrix.astype(np.float32)

    def scores(
        self,
        *,
        version: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int | None = None,
    ) -> np.ndarray:
        """Top-1 scores in the window, newest first (float64)."""
        where, params = _window(version, since, until)
        sql = f"SELECT score FROM predictions{where} ORDER BY time DESC"
        if limit is not None:
            sql += " LIMIT :limit"
            params["limit"] = _check_count("limit", limit)
        with self._reader() as conn:
            rows = conn.execute(sql, params).fetchall()
        return np.fromiter((row[0] for row in rows), dtype=np.float64, count=len(rows))

    def count(self, *, version: str | None = None, since: float | None = None, until: float | None = None) -> int:
        """Predictions in the window."""
        where, params = _window(version, since, until)
        with self._reader() as conn:
            return conn.execute(f"SELECT count(*) FROM predictions{where}", params).fetchone()[0]

    def first_scores(self, version: str, n: int) -> np.ndarray:
        """The oldest `n` top-1 scores of a version: a reference window for drift."""
        _check_text("version", version)
        with self._reader() as conn:
            rows = conn.execute(
                "SELECT score FROM predictions WHERE version = ? ORDER BY time LIMIT ?",
                (version, _check_count("n", n)),
            ).fetchall()
        return np.fromiter((row[0] for row in rows), dtype=np.float64, count=len(rows))


# --- drift --------------------------------------------------------------------------------------


def population_stability_index(reference: np.ndarray, current: np.ndarray, *, bins: int = 10) -> float:
    """PSI = sum((c - r) * ln(c / r)) over bins cut at the reference's quantiles.

    Quantile bins give every reference bin about the same weight; duplicate edges (many equal
    values) are merged, the outer edges are -inf/+inf, and proportions are floored at 1e-4 so an
    empty bin adds a large but finite term instead of log(0)."""
    ref = _finite_1d("reference", reference)
    cur = _finite_1d("current", current)
    if ref.size == 0 or cur.size == 0:
        raise MonitoringValueError(
            f"PSI needs values on both sides, got {ref.size} reference and {cur.size} current values"
        )
    bins = _check_count("bins", bins, low=2)
    inner = np.unique(np.quantile(ref, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
    r = _proportions(ref, inner)
    c = _proportions(cur, inner)
    return float(np.sum((c - r) * np.log(c / r)))


def drift_report(
    reference: np.ndarray,
    current: np.ndarray,
    *,
    reference_name: str,
    threshold: float = PSI_THRESHOLD,
    min_current: int = 50,
) -> DriftReport:
    """Compare the current top-1 confidences with a reference. The default threshold, 0.2, is the
    usual convention for a significant shift in PSI (below 0.1: none; 0.1 to 0.2: moderate)."""
    ref = _finite_1d("reference", reference)
    cur = _finite_1d("current", current)
    if ref.size == 0:
        raise MonitoringValueError(f"drift needs a non-empty reference, got 0 values from {reference_name!r}")
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not 0 < threshold < math.inf:
        raise MonitoringValueError(f"threshold must be a positive number, got {threshold!r}")
    min_current = _check_count("min_current", min_current, low=1)
    base = dict(
        statistic="PSI of top-1 confidence", threshold=float(threshold), reference=reference_name,
        n_reference=int(ref.size), n_current=int(cur.size),
    )  # fmt: skip
    if cur.size < min_current:
        message = (
            f"{min_current - cur.size} more predictions needed before comparing with {reference_name} "
            f"({cur.size} of {min_current})"
        )
        return DriftReport(value=None, alert=False, message=message, **base)
    value = population_stability_index(ref, cur)
    alert = value >= threshold
    verdict = "top-1 confidence has shifted from" if alert else "no significant shift from"
    message = f"PSI {value:.3f} {'>=' if alert else '<'} {threshold:g}: {verdict} {reference_name}"
    return DriftReport(value=value, alert=alert, message=message, **base)


# --- helpers ------------------------------------------------------------------------------------


def _open_for_writing(path: Path) -> sqlite3.Connection:
    """Open the log, create the schema in an empty file, refuse a newer schema."""
    try:
        conn = sqlite3.connect(path, timeout=READ_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as err:
        raise PredictionLogError(f"cannot open the prediction log {path}: {err}") from err
    try:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":  # e.g. a network file system: still correct, readers may wait
            logger.warning("prediction log %s: journal mode is %r, not WAL", path, mode)
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("BEGIN IMMEDIATE")  # two processes opening a new file: one creates the schema
        found = conn.execute("PRAGMA user_version").fetchone()[0]
        if found == 0:
            for statement in SCHEMA:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except sqlite3.DatabaseError as err:
        _rollback(conn)
        conn.close()
        raise PredictionLogError(f"cannot open the prediction log {path}: {err}") from err
    if found != 0 and found != SCHEMA_VERSION:
        conn.close()
        raise PredictionLogError(
            f"the prediction log {path} has schema version {found}; this Classifr reads version "
            f"{SCHEMA_VERSION} only (upgrade Classifr, or point it at another file)"
        )
    return conn


def _embedding_floor(conn: sqlite3.Connection) -> int:
    """The rowid below the oldest row that still has an embedding. INDEXED BY: the small partial
    index, where SQLite would otherwise walk the table from its first row."""
    oldest = conn.execute(
        "SELECT min(rowid) FROM predictions INDEXED BY predictions_embedding WHERE embedding IS NOT NULL"
    ).fetchone()[0]
    return 0 if oldest is None else oldest - 1


def _insert(conn: sqlite3.Connection, items: list[_Insert], start_rowid: int) -> None:
    if not items:
        return
    conn.executemany(INSERT_PREDICTION_SQL, [item.row() for item in items])
    images = [(item.record.id, item.thumbnail, start_rowid) for item in items if item.thumbnail is not None]
    if images:
        conn.executemany(_INSERT_IMAGE_SQL, images)


def _rollback(conn: sqlite3.Connection) -> None:
    try:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    except sqlite3.Error:
        logger.exception("rollback of the prediction log failed")


def _window(version: str | None, since: float | None, until: float | None) -> tuple[str, dict[str, Any]]:
    """A WHERE clause for a version and [since, until), with its named parameters."""
    clauses: list[str] = []
    params: dict[str, Any] = {}
    if version is not None:
        clauses.append("version = :version")
        params["version"] = _check_text("version", version)
    if since is not None:
        clauses.append("time >= :since")
        params["since"] = _check_number("since", since)
    if until is not None:
        clauses.append("time < :until")
        params["until"] = _check_number("until", until)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _version_stats(row: Sequence[Any]) -> dict[str, Any]:
    """One version's entry of summary() from its aggregate row (see the query there)."""
    n, score_sum, low, confirmed, corrected, first, last, *counts = row
    reviewed = confirmed + corrected
    return {
        "predictions": n,
        "by_variant": dict(zip(VARIANTS, counts[: len(VARIANTS)])),
        "by_source": dict(zip(SOURCES, counts[len(VARIANTS) :])),
        "mean_confidence": score_sum / n,
        "low_confidence_share": low / n,
        "confirmed": confirmed,
        "corrected": corrected,
        "feedback_share": reviewed / n,
        "corrected_share": corrected / n,
        "accuracy_on_feedback": confirmed / reviewed if reviewed else None,
        "first": first,
        "last": last,
    }


def _latency_stats(latencies: np.ndarray) -> dict[str, float | None]:
    if latencies.size == 0:
        return {"p50": None, "p95": None, "mean": None}
    p50, p95 = np.percentile(latencies, [50, 95])
    return {"p50": float(p50), "p95": float(p95), "mean": float(latencies.mean())}


def _natural_key(version: str) -> list[Any]:
    """v2 before v10: digit runs compare as numbers (split keeps text at even, digits at odd places)."""
    return [int(part) if i % 2 else part for i, part in enumerate(re.split(r"(\d+)", version))]


def _proportions(values: np.ndarray, inner_edges: np.ndarray) -> np.ndarray:
    counts = np.bincount(np.searchsorted(inner_edges, values, side="right"), minlength=inner_edges.size + 1)
    return np.maximum(counts / values.size, PSI_FLOOR)


def _finite_1d(name: str, values: Any) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).ravel()
    if not np.isfinite(array).all():
        raise MonitoringValueError(f"{name} values must be finite, got {int((~np.isfinite(array)).sum())} NaN or inf")
    return array


def _check_record(record: LoggedPrediction) -> np.ndarray | None:
    """Validate a record; a copy of its embedding (the caller may reuse its buffer).

    This runs on the request thread, so it favours cheap checks: the float16 conversion waits for
    the writer, and only the range that float16 can hold is checked here."""
    if not isinstance(record, LoggedPrediction):
        raise MonitoringValueError(f"expected a LoggedPrediction, got {type(record).__name__}")
    for name in ("id", "version"):
        _check_text(name, getattr(record, name))
    if not callable(record.image_sha256):
        _check_text("image_sha256", record.image_sha256)
    _check_number("time", record.time)
    if record.variant not in VARIANTS:
        raise MonitoringValueError(f"variant must be one of {', '.join(VARIANTS)}, got {record.variant!r}")
    if record.source not in SOURCES:
        raise MonitoringValueError(f"source must be one of {', '.join(SOURCES)}, got {record.source!r}")
    _check_topk(record.labels, record.scores)
    latency = _check_number("latency_ms", record.latency_ms)
    if latency < 0:
        raise MonitoringValueError(f"latency_ms must be >= 0, got {record.latency_ms!r}")
    for name in ("width", "height", "nbytes"):
        value = getattr(record, name)
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
            raise MonitoringValueError(f"{name} must be an integer >= 0, got {value!r}")
    return None if record.embedding is None else _checked_embedding(record.embedding)


def _check_topk(labels: Sequence[str], scores: Sequence[float]) -> None:
    if not isinstance(labels, (tuple, list)) or not labels:
        raise MonitoringValueError(f"labels must be a non-empty tuple of strings, got {labels!r}")
    if not isinstance(scores, (tuple, list)) or len(scores) != len(labels):
        raise MonitoringValueError(f"scores must match labels in length ({len(labels)}), got {scores!r}")
    for label in labels:
        _check_text("label", label)
    previous = math.inf
    for score in scores:
        if not _is_real(score) or not 0.0 <= score <= 1.0:
            raise MonitoringValueError(f"scores must be probabilities in [0, 1], got {score!r} in {scores!r}")
        if score > previous + 1e-9:
            raise MonitoringValueError(f"labels and scores must be best first, got scores {scores!r}")
        previous = score


def _checked_embedding(embedding: Any) -> np.ndarray:
    if not isinstance(embedding, np.ndarray) or embedding.ndim != 1 or embedding.size == 0:
        shape = getattr(embedding, "shape", type(embedding).__name__)
        raise MonitoringValueError(f"embedding must be a non-empty 1-D numpy array, got {shape}")
    if embedding.dtype.kind not in "fiu":
        raise MonitoringValueError(f"embedding must be numeric, got dtype {embedding.dtype}")
    # NaN fails both comparisons; beyond +-65504 float16 would store inf.
    if not (embedding.min() >= -FLOAT16_MAX and embedding.max() <= FLOAT16_MAX):
        raise MonitoringValueError(f"embedding has NaN or values beyond float16's range (+-{FLOAT16_MAX:g})")
    return embedding.copy()


def _check_thumbnail(thumbnail: Any) -> bytes | None:
    if thumbnail is None:
        return None
    if not isinstance(thumbnail, (bytes, bytearray, memoryview)):
        raise MonitoringValueError(f"thumbnail must be JPEG bytes, got {type(thumbnail).__name__}")
    data = bytes(thumbnail)
    if not data.startswith(b"\xff\xd8"):
        raise MonitoringValueError(f"thumbnail must be JPEG bytes, got data starting with {data[:4]!r}")
    if len(data) > MAX_THUMBNAIL_BYTES:
        raise MonitoringValueError(f"thumbnail must be at most {MAX_THUMBNAIL_BYTES} bytes, got {len(data)}")
    return data


def _check_text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_TEXT_LENGTH:
        raise MonitoringValueError(f"{name} must be a non-empty string of at most {MAX_TEXT_LENGTH} characters, got {value!r}")
    return value


def _is_real(value: Any) -> bool:
    """A real number and not a bool; the common float is checked first (this runs per record)."""
    return type(value) is float or (isinstance(value, numbers.Real) and not isinstance(value, bool))


def _check_number(name: str, value: Any) -> float:
    if not _is_real(value) or not math.isfinite(value):
        raise MonitoringValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _check_probability(name: str, value: Any) -> float:
    number = _check_number(name, value)
    if not 0.0 <= number <= 1.0:
        raise MonitoringValueError(f"{name} must be between 0 and 1, got {value!r}")
    return number


def _check_count(name: str, value: Any, *, low: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise MonitoringValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)
