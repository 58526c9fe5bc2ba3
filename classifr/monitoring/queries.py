"""The read side of the prediction log: the aggregates, galleries and rows behind the Monitor tab,
`classifr monitor` and training's traffic anchors.

* Every query opens its own short-lived connection, so any number of threads (UI, API, CLI in
  another process) can read while the writer writes.
* The embeddings sit inline in `predictions` (about 2.5 KB a row), so reading a row costs a page.
  The aggregate queries therefore read only covering indexes (`version, time, score, ...`) and
  never the rows themselves; the review queue starts from the (bounded) `images` table.

`PredictionLog` (classifr.monitoring.log) inherits these queries and provides their connections.
"""

from __future__ import annotations

import json
import math
import numbers
import re
import sqlite3
from collections.abc import Collection, Sequence
from contextlib import AbstractContextManager
from typing import Any

import numpy as np

from classifr.monitoring.records import (
    FEEDBACK_KINDS,
    SOURCES,
    VARIANTS,
    MonitoringValueError,
    _check_count,
    _check_number,
    _check_probability,
    _check_text,
)
from classifr.monitoring.schema import PREDICTION_COLUMNS, _has_column


class PredictionLogQueries:
    """The prediction log's queries. Each runs in one read transaction of its own connection from
    `_reader()`, which the class that owns the file provides (PredictionLog)."""

    def _reader(self) -> AbstractContextManager[sqlite3.Connection]:
        """A read-only connection in one read transaction, closed on exit; see PredictionLog._reader."""
        raise NotImplementedError

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

    def gallery(
        self, kind: str, *, version: str | None = None, limit: int = 24, offset: int = 0
    ) -> list[dict[str, Any]]:
        """Photos contributors `corrected` (bad) or `confirmed` (good), each once (its newest such
        prediction), worst first: the most confident mistakes, the least confident right answers."""
        if kind not in FEEDBACK_KINDS:
            raise MonitoringValueError(f"gallery kind must be one of {', '.join(FEEDBACK_KINDS)}, got {kind!r}")
        # `+version`: filter the (few) feedback rows instead of walking every row of the version.
        extra, params = (" AND +version = ?", [version]) if version is not None else ("", [])
        worst = "score DESC" if kind == "corrected" else "score"
        with self._reader() as conn:
            rows = conn.execute(
                "WITH answered AS (SELECT id, time, version, label, score, true_label, feedback_time, "
                "row_number() OVER (PARTITION BY image_sha256 ORDER BY feedback_time DESC, rowid DESC) AS nth "
                f"FROM predictions WHERE feedback = ?{extra}) "
                "SELECT id, time, version, label, score, true_label, feedback_time, "
                "EXISTS (SELECT 1 FROM images WHERE prediction_id = answered.id) "
                f"FROM answered WHERE nth = 1 ORDER BY {worst}, feedback_time DESC, id LIMIT ? OFFSET ?",
                (kind, *params, _check_count("limit", limit), _check_count("offset", offset)),
            ).fetchall()
        keys = ("id", "time", "version", "label", "score", "true_label", "feedback_time", "has_image")
        return [{**dict(zip(keys, row)), "has_image": bool(row[7])} for row in rows]

    def review_queue(
        self, *, threshold: float = 0.5, version: str | None = None, limit: int = 12, offset: int = 0
    ) -> list[dict[str, Any]]:
        """Photos nobody answered yet whose newest prediction (with a stored image) has a top-1
        score below `threshold`, each photo once, lowest score first: what to look at next."""
        threshold = _check_probability("threshold", threshold)
        extra, params = (" AND p.version = ?", [version]) if version is not None else ("", [])
        # CROSS JOIN keeps `images` outermost: it holds at most max_images rows, however long the log.
        # The same photo predicted again is one item: its newest prediction (docs/monitoring.md).
        with self._reader() as conn:
            rows = conn.execute(
                "WITH kept AS (SELECT p.id, p.time, p.version, p.label, p.score, p.topk, p.image_sha256, "
                "row_number() OVER (PARTITION BY p.image_sha256 ORDER BY p.time DESC, p.rowid DESC) AS nth "
                f"FROM images AS i CROSS JOIN predictions AS p ON p.id = i.prediction_id WHERE p.feedback IS NULL{extra}) "
                "SELECT id, time, version, label, score, topk, image_sha256 FROM kept "
                "WHERE nth = 1 AND score < ? AND NOT EXISTS (SELECT 1 FROM predictions AS q "
                "WHERE q.image_sha256 = kept.image_sha256 AND q.feedback IS NOT NULL) "
                "ORDER BY score, time DESC, id LIMIT ? OFFSET ?",
                (*params, threshold, _check_count("limit", limit), _check_count("offset", offset)),
            ).fetchall()
        keys = ("id", "time", "version", "label", "score")
        return [{**dict(zip(keys, row[:5])), "topk": json.loads(row[5]), "image_sha256": row[6]} for row in rows]

    def time_span(
        self, *, version: str | None = None, since: float | None = None, until: float | None = None
    ) -> tuple[float, float] | None:
        """(first, last) prediction time in the window, None when it holds none."""
        where, params = _window(version, since, until)
        # Two subqueries: SQLite answers a lone min() or max() from the end of an index, not both at once.
        with self._reader() as conn:
            first, last = conn.execute(
                f"SELECT (SELECT min(time) FROM predictions{where}), (SELECT max(time) FROM predictions{where})", params
            ).fetchone()
        return None if first is None else (float(first), float(last))

    def image(self, prediction_id: str) -> bytes | None:
        """The stored JPEG thumbnail of a prediction, None when there is none (or no longer)."""
        with self._reader() as conn:
            row = conn.execute("SELECT jpeg FROM images WHERE prediction_id = ?", (prediction_id,)).fetchone()
        return None if row is None else bytes(row[0])

    def prediction(self, prediction_id: str) -> dict[str, Any] | None:
        """One logged prediction (without its embedding), with `has_image`; None if unknown.
        `client` is None in a log that no writer of this version opened yet (it has no such column)."""
        columns = [c for c in PREDICTION_COLUMNS if c != "embedding"] + ["feedback", "true_label", "feedback_time"]
        with self._reader() as conn:
            client = "client" if _has_column(conn, "predictions", "client") else "NULL"
            selected = [client if c == "client" else c for c in columns]
            row = conn.execute(
                f"SELECT {', '.join(selected)}, "
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

    def feedback_conflicts(self, *, limit: int = 100) -> list[dict[str, Any]]:
        """Later answers that differ from the first one given for the same photo, newest first,
        with what the model said about the prediction they named."""
        limit = _check_count("limit", limit)
        with self._reader() as conn:
            if not _has_table(conn, "feedback_conflicts"):  # a log no writer of this version opened yet
                return []
            rows = conn.execute(
                "SELECT c.prediction_id, c.image_sha256, p.version, p.label, c.kept_label, c.label, c.kind, c.time "
                "FROM feedback_conflicts AS c LEFT JOIN predictions AS p ON p.id = c.prediction_id "
                "ORDER BY c.time DESC, c.rowid DESC LIMIT ?",
                (limit,),
            ).fetchall()
        keys = ("prediction_id", "image_sha256", "version", "predicted", "kept_label", "label", "kind", "time")
        return [dict(zip(keys, row)) for row in rows]

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
        exclude_feedback: bool = False,
    ) -> tuple[list[str], np.ndarray]:
        """Ids and a float32 matrix [n, d] of the newest predictions that still have an embedding.

        Only rows of `version` (or of any of `versions`) when given. Rows whose top-1 or true label
        is in `exclude_labels` (ignoring case), whose image is in `exclude_sha256`, or, with
        `exclude_feedback`, that a contributor confirmed or corrected are skipped, and so are rows
        of another dimension than the newest selected row (another backbone)."""
        limit = _check_count("limit", limit)
        excluded = {label.casefold() for label in exclude_labels}
        excluded_images = set(exclude_sha256)
        where, params = ["embedding IS NOT NULL"], []
        if exclude_feedback:
            where.append("feedback IS NULL")
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


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() is not None


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
