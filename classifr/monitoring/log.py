"""The prediction log: every prediction the app serves, written to SQLite off the request path.

This module owns the log's file and its writer; what a record is lives in
classifr.monitoring.records, the schema and connections in classifr.monitoring.schema, the read
queries (which `PredictionLog` inherits) in classifr.monitoring.queries, and drift in
classifr.monitoring.drift.

Design
------
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
  smaller). With `thumbnail_retention_days`, the thumbnail of a prediction nobody confirmed or
  corrected is also deleted once it is that old (docs/privacy.md); the gaps this leaves in
  `images` only make K smaller too. The caller's address (`client`) is cleared at that same age,
  answered or not. Retention runs when enough rows arrived since the last pass and at `flush()`, and
  only in an instance that wrote rows: one opened to read never deletes anything.
* Readers never wait for the writer (WAL, see classifr.monitoring.schema); every query opens a
  connection of its own (see classifr.monitoring.queries).
* A full disk never stops predictions (docs/storage.md). When the file cannot be opened or a
  batch cannot be written for lack of space, permission or an I/O error, storing is paused
  (`storage`, shown in the app's health): one log line, no retry of that batch, whose items
  are dropped and counted in `failed`. Every later batch tries again (opening the file first if
  it never opened), so writing resumes by itself once space is back, with one line saying so.
  A transaction is whole or absent, so a failure never leaves part of a batch.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from classifr.core.storage import StorageState, storage_error
from classifr.monitoring.queries import PredictionLogQueries
from classifr.monitoring.records import (
    FEEDBACK_KINDS,
    MonitoringValueError,
    PredictionLogError,
    _check_count,
    _check_number,
    _check_record,
    _check_text,
    _check_thumbnail,
)
from classifr.monitoring.schema import (
    _INSERT_IMAGE_SQL,
    INSERT_PREDICTION_SQL,
    _open_for_reading,
    _open_for_writing,
    _rollback,
)

# classifr/app/service.py imports LoggedPrediction (and PredictionLog) from this module: re-exported.
from classifr.monitoring.records import LoggedPrediction  # noqa: F401

logger = logging.getLogger(__name__)

BATCH_SIZE = 512  # items per write transaction
BATCH_LINGER_S = 0.05  # how long the writer waits for a batch to fill; rows reach SQLite within this
WRITE_ATTEMPTS = 2  # a failed batch is retried once, then dropped and counted in `failed`
DROP_WARNING_INTERVAL_S = 10.0
STORED_WHAT = "a batch of predictions"  # what a failed write did not store, in its one-line error


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
            float(r.latency_ms), r.image_sha256, int(r.width), int(r.height), int(r.nbytes), embedding, r.client,
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


class PredictionLog(PredictionLogQueries):
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
        thumbnail_retention_days: int | None = None,  # None: thumbnails go only by max_images
    ) -> None:
        _check_count("max_images", max_images)
        if thumbnail_retention_days is not None:
            _check_count("thumbnail_retention_days", thumbnail_retention_days, low=1)
        _check_count("max_embeddings", max_embeddings)
        _check_count("max_queue", max_queue, low=1)
        self.path = Path(path)
        self.store_images = bool(store_images)
        self.max_images = max_images
        self.max_embeddings = max_embeddings
        self.thumbnail_retention_days = thumbnail_retention_days
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
        self._thumbnail_floor: float | None = None  # prediction time below which expired thumbnails are gone
        self.storage = StorageState(self.path.parent, "the prediction log")
        self._conn: sqlite3.Connection | None = self._open()  # None while storing is paused
        self._thread = threading.Thread(target=self._run, name=f"prediction-log:{self.path.name}", daemon=True)
        self._thread.start()
        atexit.register(self.close)  # a CLI run that forgets close() still writes its predictions

    @property
    def queue_depth(self) -> int:
        """Predictions and feedback waiting for the writer thread (approximate, as any queue size)."""
        return self._queue.qsize()

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
        elif self._conn is not None:
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
                due = flushes or stop or self._since_retention >= self._retention_every
                if self._since_retention and due and self.storage.problem() is None:
                    self._retain()
            except Exception:  # never let the writer die: later batches may well succeed
                logger.exception("prediction log %s: unexpected error in the writer", self.path)
            finally:
                for marker in flushes:
                    marker.done.set()
            # Let go of this batch before waiting for the next: its items hold the decoded images
            # their thumbnails were made from (docs/speed.md, "Memory per request").
            del batch, writes, flushes

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
        if self._conn is None:
            self._conn = self._open()
        paused = self._conn is None
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            if paused:
                break
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                self._write_batch(self._conn, writes)
                self._conn.execute("COMMIT")
            except Exception as err:
                _rollback(self._conn)
                problem = storage_error(err, STORED_WHAT) if isinstance(err, (OSError, sqlite3.Error)) else None
                if problem is not None and problem.pauses:
                    self.storage.failed(problem)  # logged once per pause; retrying now cannot help
                    paused = True
                    break
                logger.exception(
                    "prediction log %s: writing %d items failed (attempt %d of %d)",
                    self.path, len(writes), attempt, WRITE_ATTEMPTS,
                )  # fmt: skip
                continue
            self.storage.succeeded()
            self._since_retention += sum(isinstance(item, _Insert) for item in writes)
            return
        self.failed += len(writes)
        if not paused:
            logger.error("prediction log %s: dropped %d items after %d attempts", self.path, len(writes), WRITE_ATTEMPTS)

    def _open(self) -> sqlite3.Connection | None:
        """The write connection, or None when storage fails (storing is paused; the writer tries
        again with its next batch). Any other problem (a newer schema, a corrupt file) raises."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return _open_for_writing(self.path)
        except PredictionLogError as err:
            cause = err.__cause__
            problem = storage_error(cause, STORED_WHAT) if isinstance(cause, sqlite3.Error) else None
            if problem is None:
                raise
        except OSError as err:
            problem = storage_error(err, STORED_WHAT)
        self.storage.failed(problem)
        return None

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
        """Mark the prediction with its first answer. A later answer that differs from one already
        given for the same photo (this prediction or another of the same image) is recorded in
        `feedback_conflicts` for maintainers; it never overwrites the first. The same answer again
        changes nothing."""
        if item.prediction_id is not None:
            target = f"id {item.prediction_id!r}"
            row = conn.execute(
                "SELECT id, image_sha256, true_label FROM predictions WHERE id = ?", (item.prediction_id,)
            ).fetchone()
        else:
            target = f"image {item.image_sha256!r}"
            row = conn.execute(
                "SELECT id, image_sha256, true_label FROM predictions WHERE image_sha256 = ? "
                "ORDER BY time DESC, rowid DESC LIMIT 1",
                (item.image_sha256,),
            ).fetchone()
        if row is None:
            logger.info("prediction log %s: no prediction with %s; feedback %r ignored", self.path, target, item.kind)
            return
        prediction_id, sha256, answered = row
        if answered is None:
            conn.execute(
                "UPDATE predictions SET feedback = ?, true_label = ?, feedback_time = ? WHERE id = ?",
                (item.kind, item.label, item.at, prediction_id),
            )
        earlier = [answered] if answered is not None else []
        earlier += [label for (label,) in conn.execute(
            "SELECT true_label FROM predictions WHERE image_sha256 = ? AND id != ? AND true_label IS NOT NULL "
            "ORDER BY feedback_time, rowid",
            (sha256, prediction_id),
        )]  # fmt: skip
        kept = next((label for label in earlier if label.casefold() != item.label.casefold()), None)
        if kept is None:
            return
        conn.execute(
            "INSERT INTO feedback_conflicts (prediction_id, image_sha256, kept_label, label, kind, time) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (prediction_id, sha256, kept, item.label, item.kind, item.at),
        )
        logger.info("prediction log %s: photo %s answered %r after %r; kept as a conflict", self.path, sha256[:12], item.label, kept)

    def _retain(self) -> None:
        """Drop thumbnails beyond the newest `max_images` and embeddings beyond the newest
        `max_embeddings` predictions. Rowids have no gaps (see the module docstring), so both
        cutoffs come from max(rowid) alone and each pass only touches the rows it changes.
        Then drop the thumbnails that outlived `thumbnail_retention_days` without feedback, and
        clear the client addresses of every prediction that old."""
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            newest_image = conn.execute("SELECT max(rowid) FROM images").fetchone()[0]
            if newest_image is not None and newest_image > self.max_images:
                conn.execute("DELETE FROM images WHERE rowid <= ?", (newest_image - self.max_images,))
            thumbnail_floor = self._expire_thumbnails(conn)
            self._expire_clients(conn)
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
        self._thumbnail_floor = thumbnail_floor
        self._since_retention = 0

    def _expire_thumbnails(self, conn: sqlite3.Connection) -> float | None:
        """Delete the thumbnails of predictions older than the retention that have no feedback;
        return the new floor: the prediction time below which none is left.

        Each pass visits only the predictions that aged past the cutoff since the last one, through
        the (time, ..., feedback, ...) index; the first pass starts at the oldest kept thumbnail.
        Predictions are logged at the time they are made, so none arrives below the floor later.
        """
        if self.thumbnail_retention_days is None:
            return None
        cutoff = time.time() - self.thumbnail_retention_days * 86400.0
        floor = self._thumbnail_floor if self._thumbnail_floor is not None else _oldest_thumbnail_time(conn)
        if floor is not None and floor < cutoff:
            deleted = conn.execute(
                "DELETE FROM images WHERE prediction_id IN "
                "(SELECT id FROM predictions WHERE time >= ? AND time < ? AND feedback IS NULL)",
                (floor, cutoff),
            ).rowcount
            if deleted:
                logger.info("prediction log %s: deleted %d thumbnails older than %d days without feedback",
                            self.path, deleted, self.thumbnail_retention_days)  # fmt: skip
        return cutoff if floor is None else max(floor, cutoff)

    def _expire_clients(self, conn: sqlite3.Connection) -> None:
        """Clear the caller's address of predictions older than the thumbnail retention, answered
        or not: it is personal data that no review needs (docs/privacy.md). The partial index holds
        only the rows that still have one, so a pass visits just those it clears."""
        if self.thumbnail_retention_days is None:
            return
        cutoff = time.time() - self.thumbnail_retention_days * 86400.0
        cleared = conn.execute(
            "UPDATE predictions INDEXED BY predictions_client SET client = NULL WHERE client IS NOT NULL AND time < ?",
            (cutoff,),
        ).rowcount
        if cleared:
            logger.info("prediction log %s: cleared the client address of %d predictions older than %d days",
                        self.path, cleared, self.thumbnail_retention_days)  # fmt: skip

    # --- reading (the queries are PredictionLogQueries') ---------------------------------------

    def _reader(self) -> AbstractContextManager[sqlite3.Connection]:
        """A connection of its own for one query (see classifr.monitoring.schema)."""
        return _open_for_reading(self.path)


# --- helpers ------------------------------------------------------------------------------------


def _embedding_floor(conn: sqlite3.Connection) -> int:
    """The rowid below the oldest row that still has an embedding. INDEXED BY: the small partial
    index, where SQLite would otherwise walk the table from its first row."""
    oldest = conn.execute(
        "SELECT min(rowid) FROM predictions INDEXED BY predictions_embedding WHERE embedding IS NOT NULL"
    ).fetchone()[0]
    return 0 if oldest is None else oldest - 1


def _oldest_thumbnail_time(conn: sqlite3.Connection) -> float | None:
    """The time of the oldest prediction that still has a thumbnail; None when none has.
    Walks `images`, which max_images keeps small, once per writer."""
    return conn.execute(
        "SELECT min(p.time) FROM images AS i CROSS JOIN predictions AS p ON p.id = i.prediction_id"
    ).fetchone()[0]


def _insert(conn: sqlite3.Connection, items: list[_Insert], start_rowid: int) -> None:
    if not items:
        return
    conn.executemany(INSERT_PREDICTION_SQL, [item.row() for item in items])
    images = [(item.record.id, item.thumbnail, start_rowid) for item in items if item.thumbnail is not None]
    if images:
        conn.executemany(_INSERT_IMAGE_SQL, images)
