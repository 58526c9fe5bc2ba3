"""The prediction log on real SQLite files: concurrency, exact aggregates, retention, query plans, drift."""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
import uuid
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from classifr.core.errors import ClassifrError
from classifr.monitoring.drift import DriftReport, drift_report, population_stability_index
from classifr.monitoring.log import PredictionLog
from classifr.monitoring.records import LoggedPrediction, PredictionLogError
from classifr.monitoring.schema import INSERT_PREDICTION_SQL

JPEG = b"\xff\xd8\xff\xe0" + b"thumbnail" * 10  # the log checks the JPEG marker only


def record(**overrides) -> LoggedPrediction:
    values = dict(
        id=uuid.uuid4().hex, time=1000.0, version="v1", variant="production", source="ui",
        labels=("cat", "dog"), scores=(0.8, 0.1), latency_ms=12.5, image_sha256="0" * 64,
        width=640, height=480, nbytes=20_000, embedding=None, thumbnail=None,
    )  # fmt: skip
    values.update(overrides)
    return LoggedPrediction(**values)


@pytest.fixture
def log(tmp_path):
    with PredictionLog(tmp_path / "monitoring" / "predictions.db") as opened:
        yield opened


def rows(path: Path, sql: str, params=()) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute(sql, params).fetchall()


# --- writing -------------------------------------------------------------------------------------


@pytest.mark.slow  # over 0.25 s: outside the edit loop's fast subset
def test_many_threads_log_and_give_feedback_without_losing_a_row(log):
    threads, per_thread = 16, 500
    to_review: queue.Queue = queue.Queue()
    reviewed: list[str] = []

    def predict(n: int) -> None:
        for i in range(per_thread):
            item = record(time=1000.0 + i, image_sha256=f"{n:032x}{i:032x}", embedding=np.full(8, i, np.float32))
            log.log(item)
            if i % 10 == 0:
                to_review.put(item.id)  # only after log() returned, as the app would
        to_review.put(None)

    def review() -> None:
        finished = 0
        while finished < threads // 2:
            prediction_id = to_review.get()
            if prediction_id is None:
                finished += 1
                continue
            log.record_feedback(prediction_id=prediction_id, label="dog", kind="corrected")
            reviewed.append(prediction_id)

    workers = [threading.Thread(target=predict, args=(n,)) for n in range(threads)]
    workers += [threading.Thread(target=review) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert log.flush()
    ids = [row[0] for row in rows(log.path, "SELECT id FROM predictions")]
    assert len(ids) == threads * per_thread == len(set(ids))
    assert log.dropped == 0 and log.failed == 0
    corrected = {row[0] for row in rows(log.path, "SELECT id FROM predictions WHERE feedback = 'corrected'")}
    assert corrected == set(reviewed) and len(reviewed) == threads * per_thread // 10


def test_feedback_queued_right_after_its_prediction_applies(log):
    item = record()
    log.log(item)
    log.record_feedback(prediction_id=item.id, label="cat", kind="confirmed", at=2000.0)
    assert log.flush()
    found = log.prediction(item.id)
    assert (found["feedback"], found["true_label"], found["feedback_time"]) == ("confirmed", "cat", 2000.0)


def test_feedback_by_image_hash_goes_to_the_most_recent_prediction_of_that_image(log):
    newer, older, other = record(time=20.0), record(time=10.0), record(time=30.0, image_sha256="f" * 64)
    for item in (newer, older, other):  # the newer one is written first: "recent" is by time
        log.log(item)
    log.record_feedback(image_sha256="0" * 64, label="fox", kind="corrected", at=40.0)
    assert log.flush()
    assert log.prediction(newer.id)["true_label"] == "fox"
    assert log.prediction(older.id)["feedback"] is None and log.prediction(other.id)["feedback"] is None


def test_feedback_for_an_unknown_prediction_is_harmless(log, caplog):
    item = record()
    log.log(item)
    with caplog.at_level(logging.INFO, logger="classifr.monitoring.log"):
        log.record_feedback(prediction_id="no-such-id", label="cat", kind="confirmed")
        log.record_feedback(image_sha256="e" * 64, label="cat", kind="confirmed")
        assert log.flush()
    assert log.failed == 0 and log.prediction(item.id)["feedback"] is None
    assert "no-such-id" in caplog.text and "e" * 64 in caplog.text


def test_a_duplicate_id_is_ignored_without_losing_the_batch(log):
    first = record(thumbnail=JPEG)
    log.log(first)
    log.log(replace(first, time=5.0))  # same id, same batch
    assert log.flush()
    log.log(replace(first, time=6.0, thumbnail=JPEG + b"other"))  # same id, a later batch
    log.log(second := record())
    assert log.flush()
    assert log.failed == 0
    assert rows(log.path, "SELECT id, time FROM predictions ORDER BY rowid") == [(first.id, 1000.0), (second.id, 1000.0)]
    assert log.image(first.id) == JPEG


def test_retention_keeps_the_newest_images_and_embeddings(tmp_path):
    with PredictionLog(tmp_path / "log.db", max_images=5, max_embeddings=7) as log:
        items = [record(time=float(i), thumbnail=JPEG, embedding=np.full(4, i, np.float32)) for i in range(20)]
        for item in items:
            log.log(item)
        assert log.flush()
        with_image = {row[0] for row in rows(log.path, "SELECT prediction_id FROM images")}
        assert with_image == {item.id for item in items[-5:]}
        with_embedding = {row[0] for row in rows(log.path, "SELECT id FROM predictions WHERE embedding IS NOT NULL")}
        assert with_embedding == {item.id for item in items[-7:]}
        ids, matrix = log.embeddings()
        assert ids == [item.id for item in reversed(items[-7:])]
        assert matrix[:, 0].tolist() == list(range(19, 12, -1))
        assert log.image(items[0].id) is None and log.image(items[-1].id) == JPEG
    with PredictionLog(tmp_path / "log.db", max_images=1, max_embeddings=1) as reader:  # reads only
        assert reader.flush()
        assert len(reader.embeddings()[0]) == 7 and rows(reader.path, "SELECT count(*) FROM images") == [(5,)]
    with PredictionLog(tmp_path / "log.db", max_images=2, max_embeddings=3) as smaller:  # limits lowered
        smaller.log(newest := record(time=20.0, thumbnail=JPEG, embedding=np.full(4, 20, np.float32)))
        assert smaller.flush()
        assert {row[0] for row in rows(smaller.path, "SELECT prediction_id FROM images")} == {newest.id, items[-1].id}
        assert smaller.embeddings()[0] == [newest.id, items[-1].id, items[-2].id]


def test_without_images_no_thumbnail_is_stored(tmp_path):
    with PredictionLog(tmp_path / "log.db", store_images=False) as log:
        log.log(record(thumbnail=JPEG, scores=(0.1, 0.05)))
        assert log.flush()
        assert rows(log.path, "SELECT count(*) FROM images") == [(0,)]
        assert rows(log.path, "SELECT count(*) FROM predictions") == [(1,)]
        assert log.review_queue() == []


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"variant": "staging"}, "'staging'"),
        ({"source": "email"}, "'email'"),
        ({"labels": ("cat", "dog", "fox")}, "scores must match labels"),
        ({"scores": (1.5, 0.1)}, "1.5"),
        ({"scores": (0.2, 0.7)}, "best first"),
        ({"latency_ms": float("nan")}, "latency_ms"),
        ({"labels": (), "scores": ()}, "labels"),
        ({"id": ""}, "id"),
        ({"time": float("inf")}, "time"),
        ({"width": -1}, "width"),
        ({"embedding": np.ones((2, 3))}, "embedding"),
        ({"embedding": np.array([1.0, np.nan])}, "embedding"),
        ({"thumbnail": b"\x89PNG not a jpeg"}, "thumbnail"),
    ],
)
def test_a_bad_record_raises_a_value_error_naming_it_and_nothing_is_written(log, overrides, named):
    with pytest.raises(ValueError) as err:
        log.log(record(**overrides))
    assert named in str(err.value) and isinstance(err.value, ClassifrError)
    assert log.flush()
    assert rows(log.path, "SELECT count(*) FROM predictions") == [(0,)]


def test_bad_feedback_raises(log):
    with pytest.raises(ValueError, match="'liked'"):
        log.record_feedback(prediction_id="x", label="cat", kind="liked")
    with pytest.raises(ValueError, match="prediction_id or an image_sha256"):
        log.record_feedback(label="cat", kind="confirmed")


def test_a_full_queue_drops_and_counts_without_blocking_or_raising(tmp_path, caplog):
    stalled, release = threading.Event(), threading.Event()
    with PredictionLog(tmp_path / "log.db", max_queue=2) as log:
        write = log._write_batch

        def slow_write(conn, writes):  # a disk that stalls: the writer is stuck on its first batch
            stalled.set()
            release.wait(10)
            write(conn, writes)

        log._write_batch = slow_write
        log.log(record())
        # Only once the writer is stuck in its write is the queue's content known exactly: before,
        # it may still be collecting a batch and take any number of the records that follow.
        assert stalled.wait(10)
        with caplog.at_level(logging.WARNING, logger="classifr.monitoring.log"):
            for _ in range(20):
                log.log(record())
        release.set()
        assert log.flush()
        assert log.dropped == 18  # 2 of the 20 wait in the queue
        assert rows(log.path, "SELECT count(*) FROM predictions") == [(3,)]
        assert sum("queue is full" in message for message in caplog.messages) == 1  # rate-limited


def test_a_failed_write_is_retried_once_then_dropped_and_the_writer_goes_on(log, caplog):
    write = log._write_batch
    failures = iter([True, False, True, True])  # batch 1 fails once; batch 2 fails twice

    def flaky(conn, writes):
        write(conn, writes)  # the rows go in, and the failure must roll them back
        if next(failures):
            raise sqlite3.OperationalError("database or disk is full")

    log._write_batch = flaky
    with caplog.at_level(logging.ERROR, logger="classifr.monitoring.log"):
        log.log(first := record())
        assert log.flush()
        log.log(lost := record())
        assert log.flush()
    log._write_batch = write
    log.log(later := record())
    assert log.flush()
    ids = {row[0] for row in rows(log.path, "SELECT id FROM predictions")}
    assert ids == {first.id, later.id} and lost.id not in ids
    assert log.failed == 1
    assert "database or disk is full" in caplog.text


def test_close_flushes_and_is_final_and_reopening_keeps_the_rows(tmp_path):
    path = tmp_path / "log.db"
    log = PredictionLog(path)
    items = [record(time=float(i)) for i in range(3)]
    for item in items:
        log.log(item)
    log.close()
    log.close()  # idempotent
    with pytest.raises(RuntimeError, match="prediction log is closed"):
        log.log(record())
    with pytest.raises(RuntimeError, match="prediction log is closed"):
        log.record_feedback(prediction_id=items[0].id, label="cat", kind="confirmed")
    assert log.summary()["total"] == 3  # queries still read the file
    with PredictionLog(path) as again:
        again.log(record())
        assert again.flush()
        assert again.summary()["total"] == 4


def test_a_newer_schema_or_a_foreign_file_is_refused_clearly(tmp_path):
    path = tmp_path / "log.db"
    PredictionLog(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 2")
    with pytest.raises(PredictionLogError, match="schema version 2"):
        PredictionLog(path)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(PredictionLogError, match="garbage.db"):
        PredictionLog(garbage)


# --- exact aggregates over a hand-made log ---------------------------------------------------------

# id, time, version, variant, source, labels, scores, latency, sha, embedding value (dim), thumbnail
SEEDED = [
    ("r1", 1000.0, "v1", "production", "ui", ("cat", "dog"), (0.9, 0.1), 10.0, "a", (1, 3), False),
    ("r2", 1010.0, "v1", "production", "ui", ("dog", "cat"), (0.4, 0.35), 30.0, "b", (2, 4), False),
    ("r3", 1020.0, "v1", "production", "api", ("cat",), (1.0,), 20.0, "c", (3, 4), True),
    ("r4", 1030.0, "v1", "production", "ui", ("bird",), (0.0,), 50.0, "d", None, True),
    ("r5", 4000.0, "v2", "candidate", "cli", ("dog", "cat"), (0.6, 0.3), 5.0, "e", (5, 4), False),
    ("r6", 4010.0, "v2", "candidate", "cli", ("dog", "fox"), (0.2, 0.1), 7.0, "f", (6, 4), True),
    ("r7", 7300.0, "v2", "direct", "cli", ("cat", "mouse"), (0.45, 0.4), 9.0, "g", (7, 4), True),
    ("r8", 7400.0, "v2", "direct", "api", ("owl", "cat"), (0.3, 0.2), 11.0, "h", (8, 4), False),
]


@pytest.fixture
def seeded(log):
    for rid, t, version, variant, source, labels, scores, latency, sha, emb, thumb in SEEDED:
        log.log(
            record(
                id=rid, time=t, version=version, variant=variant, source=source, labels=labels, scores=scores,
                latency_ms=latency, image_sha256=sha * 64, thumbnail=JPEG + rid.encode() if thumb else None,
                embedding=None if emb is None else np.full(emb[1], emb[0], np.float32),
            )
        )
    log.record_feedback(prediction_id="r1", label="cat", kind="confirmed", at=5100.0)
    log.record_feedback(prediction_id="r2", label="cat", kind="corrected", at=5000.0)
    log.record_feedback(image_sha256="e" * 64, label="cat", kind="corrected", at=5500.0)
    log.record_feedback(prediction_id="r6", label="bird", kind="corrected", at=6000.0)
    assert log.flush()
    return log


def test_summary_is_exact(seeded):
    summary = seeded.summary()
    assert summary["total"] == 8 and summary["window"] == {"since": None, "until": None}
    assert list(summary["by_version"]) == ["v1", "v2"]
    v1, v2 = summary["by_version"]["v1"], summary["by_version"]["v2"]
    assert v1["predictions"] == 4
    assert v1["by_variant"] == {"production": 4, "candidate": 0, "direct": 0, "pinned": 0}
    assert v1["by_source"] == {"ui": 3, "api": 1, "cli": 0, "feedback": 0}
    assert v1["mean_confidence"] == pytest.approx(0.575)
    assert v1["low_confidence_share"] == 0.5
    assert (v1["confirmed"], v1["corrected"]) == (1, 1)
    assert (v1["feedback_share"], v1["corrected_share"], v1["accuracy_on_feedback"]) == (0.5, 0.25, 0.5)
    latencies = np.array([10.0, 30.0, 20.0, 50.0])
    assert v1["latency_ms"] == {
        "p50": np.percentile(latencies, 50), "p95": np.percentile(latencies, 95), "mean": 27.5,
    }  # fmt: skip
    assert (v1["first"], v1["last"]) == (1000.0, 1030.0)
    assert v2["predictions"] == 4
    assert v2["by_variant"] == {"production": 0, "candidate": 2, "direct": 2, "pinned": 0}
    assert v2["by_source"] == {"ui": 0, "api": 1, "cli": 3, "feedback": 0}
    assert v2["mean_confidence"] == pytest.approx(0.3875)
    assert v2["low_confidence_share"] == 0.75
    assert (v2["confirmed"], v2["corrected"], v2["accuracy_on_feedback"]) == (0, 2, 0.0)
    assert (v2["feedback_share"], v2["corrected_share"]) == (0.5, 0.5)
    assert v2["latency_ms"] == {"p50": 8.0, "p95": np.percentile([5.0, 7.0, 9.0, 11.0], 95), "mean": 8.0}
    assert json.loads(json.dumps(summary)) == summary


def test_summary_of_a_window_and_of_an_empty_log(seeded, tmp_path):
    window = seeded.summary(since=1010.0, until=7300.0, low_confidence=0.3)
    assert window["total"] == 5 and window["window"] == {"since": 1010.0, "until": 7300.0}
    v1, v2 = window["by_version"]["v1"], window["by_version"]["v2"]
    assert (v1["predictions"], v1["first"], v1["last"]) == (3, 1010.0, 1030.0)
    assert v1["low_confidence_share"] == pytest.approx(1 / 3)  # only 0.0 is below 0.3
    assert v1["latency_ms"]["p50"] == 30.0
    assert (v2["predictions"], v2["first"], v2["last"]) == (2, 4000.0, 4010.0)
    with PredictionLog(tmp_path / "empty.db") as empty:
        assert empty.summary() == {"total": 0, "window": {"since": None, "until": None}, "by_version": {}}


def test_volume_buckets(seeded):
    assert seeded.volume(bucket_s=3600) == [
        {"start": 0.0, "version": "v1", "predictions": 4},
        {"start": 3600.0, "version": "v2", "predictions": 2},
        {"start": 7200.0, "version": "v2", "predictions": 2},
    ]
    assert seeded.volume(bucket_s=3600, version="v2", since=4005.0) == [
        {"start": 3600.0, "version": "v2", "predictions": 1},
        {"start": 7200.0, "version": "v2", "predictions": 2},
    ]
    assert seeded.volume(bucket_s=1000, until=1010.0) == [{"start": 1000.0, "version": "v1", "predictions": 1}]
    with pytest.raises(ValueError, match="bucket_s"):
        seeded.volume(bucket_s=0)


def test_label_distribution_order(seeded):
    assert seeded.label_distribution() == [
        {"label": "cat", "predictions": 3},
        {"label": "dog", "predictions": 3},
        {"label": "bird", "predictions": 1},
        {"label": "owl", "predictions": 1},
    ]
    assert [d["label"] for d in seeded.label_distribution(version="v2")] == ["dog", "cat", "owl"]
    assert [d["label"] for d in seeded.label_distribution(limit=2)] == ["cat", "dog"]


def test_confidence_histogram_includes_zero_and_one(seeded):
    histogram = seeded.confidence_histogram()
    assert [(b["low"], b["high"]) for b in histogram] == [(i / 10, (i + 1) / 10) for i in range(10)]
    # scores 0.0, 0.2, 0.3, 0.4, 0.45, 0.6, 0.9, 1.0
    assert [b["predictions"] for b in histogram] == [1, 0, 1, 1, 2, 0, 1, 0, 0, 2]
    assert [b["predictions"] for b in seeded.confidence_histogram(bins=4)] == [2, 3, 1, 2]
    assert [b["predictions"] for b in seeded.confidence_histogram(version="v1", bins=2)] == [2, 2]


def test_galleries_worst_first(seeded):
    corrected = seeded.gallery("corrected")  # the most confident mistakes first
    assert [(g["id"], g["label"], g["true_label"], g["has_image"]) for g in corrected] == [
        ("r5", "dog", "cat", False),
        ("r2", "dog", "cat", False),
        ("r6", "dog", "bird", True),
    ]
    assert corrected[2] == {
        "id": "r6", "time": 4010.0, "version": "v2", "label": "dog", "score": 0.2, "true_label": "bird",
        "feedback_time": 6000.0, "has_image": True,
    }  # fmt: skip
    assert [g["id"] for g in seeded.gallery("confirmed")] == ["r1"]
    assert [g["id"] for g in seeded.gallery("corrected", version="v1")] == ["r2"]
    assert [g["id"] for g in seeded.gallery("corrected", limit=1)] == ["r5"]
    assert [g["id"] for g in seeded.gallery("corrected", limit=2, offset=2)] == ["r6"]  # the next page
    with pytest.raises(ValueError, match="'liked'"):
        seeded.gallery("liked")
    with pytest.raises(ValueError, match="offset must be an integer >= 0, got -1"):
        seeded.gallery("corrected", offset=-1)


def test_review_queue_has_unreviewed_low_scores_with_an_image(seeded):
    # r2, r6: reviewed already; r8 (0.3): no image; r3: confident
    assert seeded.review_queue() == [
        {"id": "r4", "time": 1030.0, "version": "v1", "label": "bird", "score": 0.0, "topk": [["bird", 0.0]],
         "image_sha256": "d" * 64},
        {"id": "r7", "time": 7300.0, "version": "v2", "label": "cat", "score": 0.45, "topk": [["cat", 0.45], ["mouse", 0.4]],
         "image_sha256": "g" * 64},
    ]  # fmt: skip
    assert [r["id"] for r in seeded.review_queue(threshold=0.4)] == ["r4"]
    assert [r["id"] for r in seeded.review_queue(version="v2")] == ["r7"]
    assert [r["id"] for r in seeded.review_queue(limit=1)] == ["r4"]
    assert [r["id"] for r in seeded.review_queue(limit=1, offset=1)] == ["r7"]


def test_the_same_photo_predicted_three_times_is_one_review_item_and_one_gallery_photo(log):
    # One photo (hash "a") classified three times, as a page that predicts on upload and again
    # would; another photo once. Each is one item: the newest prediction of it.
    for n, (at, score) in enumerate([(1000.0, 0.30), (1001.0, 0.20), (1002.0, 0.25)]):
        log.log(record(id=f"same{n}", time=at, scores=(score, 0.1), image_sha256="a" * 64, thumbnail=JPEG))
    log.log(record(id="other", time=1003.0, scores=(0.4, 0.1), image_sha256="b" * 64, thumbnail=JPEG))
    assert log.flush()
    assert [(r["id"], r["image_sha256"][0]) for r in log.review_queue()] == [("same2", "a"), ("other", "b")]
    assert len(log.review_queue(limit=1, offset=1)) == 1  # pages count photos, not predictions

    # Answered through its oldest prediction: the photo leaves the queue, whichever prediction was answered.
    log.record_feedback(prediction_id="same0", label="dog", kind="corrected", at=2000.0)
    log.record_feedback(prediction_id="same1", label="dog", kind="corrected", at=2001.0)
    assert log.flush()
    assert [r["id"] for r in log.review_queue()] == ["other"]
    assert [g["id"] for g in log.gallery("corrected")] == ["same1"]  # one photo, its newest answer


def test_time_span_is_the_first_and_last_prediction_of_the_window(seeded, tmp_path):
    assert seeded.time_span() == (1000.0, 7400.0)
    assert seeded.time_span(version="v2", since=4005.0) == (4010.0, 7400.0)
    assert seeded.time_span(since=8000.0) is None


def test_feedback_confusion_counts_pairs(seeded):
    assert seeded.feedback_confusion() == [
        {"predicted": "dog", "true": "cat", "count": 2},
        {"predicted": "cat", "true": "cat", "count": 1},
        {"predicted": "dog", "true": "bird", "count": 1},
    ]
    assert seeded.feedback_confusion(version="v2") == [
        {"predicted": "dog", "true": "bird", "count": 1},
        {"predicted": "dog", "true": "cat", "count": 1},
    ]


def test_embeddings_newest_first_excluding_labels_and_other_dimensions(seeded):
    ids, matrix = seeded.embeddings()
    assert ids == ["r8", "r7", "r6", "r5", "r3", "r2"]  # r1 has 3 dimensions, the newest row 4
    assert matrix.dtype == np.float32 and matrix.shape == (6, 4)
    assert matrix[:, 0].tolist() == [8, 7, 6, 5, 3, 2]
    # "CAT" matches the top-1 label (r7, r3, r1) and the true label (r5, r2), ignoring case
    assert seeded.embeddings(exclude_labels=["CAT"])[0] == ["r8", "r6"]
    assert seeded.embeddings(exclude_labels={"owl", "dog"})[0] == ["r7", "r3"]
    assert seeded.embeddings(version="v1")[0] == ["r3", "r2"]
    assert seeded.embeddings(since=4005.0)[0] == ["r8", "r7", "r6"]
    assert seeded.embeddings(limit=2)[0] == ["r8", "r7"]
    ids, matrix = seeded.embeddings(exclude_labels=["cat", "dog", "owl"])
    assert ids == [] and matrix.shape == (0, 0) and matrix.dtype == np.float32


def test_scores_prediction_and_image(seeded):
    assert seeded.scores().tolist() == [0.3, 0.45, 0.2, 0.6, 0.0, 1.0, 0.4, 0.9]
    assert seeded.scores(version="v1", limit=2).tolist() == [0.0, 1.0]
    assert seeded.scores(since=4000.0, until=7300.0).tolist() == [0.2, 0.6]
    assert seeded.first_scores("v2", 2).tolist() == [0.6, 0.2]
    found = seeded.prediction("r7")
    assert found["topk"] == [["cat", 0.45], ["mouse", 0.4]] and found["has_image"] is True
    assert found["feedback"] is None and "embedding" not in found
    assert json.loads(json.dumps(found)) == found
    assert seeded.prediction("nope") is None
    assert seeded.image("r7") == JPEG + b"r7" and seeded.image("r1") is None


# --- query plans on a large log --------------------------------------------------------------------


@pytest.fixture(scope="module")
def large_log(tmp_path_factory):
    """100,000 predictions over 3 versions, written directly with the log's own INSERT statement
    (the writer thread would take seconds), with some feedback and 2,000 thumbnails."""
    path = tmp_path_factory.mktemp("large") / "predictions.db"
    PredictionLog(path).close()  # creates the schema
    rng = np.random.default_rng(0)
    n = 100_000
    scores, latencies = rng.random(n).tolist(), (rng.random(n) * 100).tolist()
    with sqlite3.connect(path) as conn:
        conn.executemany(
            INSERT_PREDICTION_SQL,
            (
                (f"{i:032x}", 1.7e9 + 10.0 * i, f"v{i % 3 + 1}", "production", "ui", f"label{i % 50}", scores[i],
                 "[]", latencies[i], f"{i % 5000:064x}", 224, 224, 20_000, b"\x00\x3c" * 8 if i >= n - 2000 else None, None)
                for i in range(n)
            ),
        )  # fmt: skip
        conn.executemany(
            "UPDATE predictions SET feedback = ?, true_label = label, feedback_time = time WHERE rowid = ?",
            [("confirmed" if i % 2 else "corrected", i) for i in range(1, n, 97)],
        )
        conn.executemany("INSERT INTO images VALUES (?, ?)", [(f"{i:032x}", JPEG) for i in range(n - 2000, n)])
    log = PredictionLog(path)
    yield log
    log.close()


@contextmanager
def traced(log: PredictionLog):
    """Collect every statement the log's queries run (with their parameters filled in)."""
    statements: list[str] = []
    reader = log._reader

    @contextmanager
    def tracing_reader():
        with reader() as conn:
            conn.set_trace_callback(statements.append)
            yield conn

    log._reader = tracing_reader
    try:
        yield statements
    finally:
        del log._reader


SINCE = 1.7e9 + 10.0 * 95_000
DERIVED = {"answered", "kept", "CONSTANT"}  # the WITH tables of gallery() and review_queue(); time_span's one row


@pytest.mark.parametrize(
    ("name", "call", "filtered"),
    [
        ("summary", lambda log: log.summary(), False),
        ("summary since", lambda log: log.summary(since=SINCE), True),
        ("summary window", lambda log: log.summary(since=SINCE, until=SINCE + 3600), True),
        ("volume", lambda log: log.volume(bucket_s=3600), False),
        ("volume of a version", lambda log: log.volume(bucket_s=3600, version="v2", since=SINCE), True),
        ("labels", lambda log: log.label_distribution(), False),
        ("labels since", lambda log: log.label_distribution(since=SINCE), True),
        ("labels of a version", lambda log: log.label_distribution(version="v1"), True),
        ("histogram", lambda log: log.confidence_histogram(), False),
        ("histogram window", lambda log: log.confidence_histogram(version="v3", since=SINCE, until=SINCE + 60), True),
        ("gallery", lambda log: log.gallery("corrected"), True),
        ("gallery of a version", lambda log: log.gallery("confirmed", version="v2"), True),
        ("review queue", lambda log: log.review_queue(), False),
        ("review queue of a version", lambda log: log.review_queue(version="v1"), False),
        ("review queue, a later page", lambda log: log.review_queue(limit=5, offset=5), False),
        ("time span", lambda log: log.time_span(version="v2", since=SINCE), True),
        ("confusion", lambda log: log.feedback_confusion(version="v1"), True),
        ("embeddings", lambda log: log.embeddings(version="v1", exclude_labels=["label1"]), False),
        ("scores", lambda log: log.scores(version="v2", since=SINCE, limit=100), True),
        ("first scores", lambda log: log.first_scores("v2", 500), True),
        ("feedback by image", None, True),
    ],
)
@pytest.mark.slow  # over 0.25 s: outside the edit loop's fast subset
def test_queries_on_a_large_log_read_indexes(large_log, name, call, filtered):
    if call is None:  # the writer's lookup of the latest prediction of an image
        statements = [
            f"UPDATE predictions SET feedback = 'confirmed' WHERE rowid = (SELECT rowid FROM predictions "
            f"WHERE image_sha256 = '{7:064x}' ORDER BY time DESC, rowid DESC LIMIT 1)"
        ]
    else:
        with traced(large_log) as statements:
            result = call(large_log)
        assert len(result) > 0, name
    queries = [s for s in statements if not s.startswith(("PRAGMA", "BEGIN"))]
    assert queries, name
    with sqlite3.connect(large_log.path) as conn:
        for sql in queries:
            plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}")]
            # A scan of a query's own intermediate result (a WITH table, a subquery) is not a table scan.
            scans = [step for step in plan if step.startswith("SCAN") and step.split()[1] not in DERIVED
                     and not step.startswith("SCAN (subquery")]
            assert all("INDEX" in step for step in scans), (name, sql, plan)  # never a bare table scan
            if filtered:  # a range of an index, or at worst a scan of an index holding every column read
                assert all(
                    step.startswith("SEARCH") or "COVERING INDEX" in step
                    for step in plan
                    if step.startswith(("SCAN", "SEARCH")) and " predictions " in f"{step} "
                ), (name, sql, plan)


def test_large_log_aggregates_match_numpy(large_log):
    """The covering indexes give the same numbers as a plain read of every row."""
    summary = large_log.summary(since=SINCE)
    with sqlite3.connect(large_log.path) as conn:
        data = conn.execute("SELECT version, score, latency_ms FROM predictions WHERE time >= ?", (SINCE,)).fetchall()
    for version in ("v1", "v2", "v3"):
        scores = np.array([s for v, s, _ in data if v == version])
        latencies = np.array([lat for v, _, lat in data if v == version])
        entry = summary["by_version"][version]
        assert entry["predictions"] == len(scores)
        assert entry["mean_confidence"] == pytest.approx(scores.mean())
        assert entry["low_confidence_share"] == pytest.approx((scores < 0.5).mean())
        assert entry["latency_ms"]["p95"] == pytest.approx(np.percentile(latencies, 95))
    histogram = large_log.confidence_histogram(since=SINCE)
    assert sum(b["predictions"] for b in histogram) == len(data)


# --- drift -------------------------------------------------------------------------------------------


def test_psi_of_the_same_distribution_is_about_zero_and_of_a_shift_is_large():
    rng = np.random.default_rng(7)
    reference = rng.beta(8, 2, 2000)
    assert population_stability_index(reference, reference) == pytest.approx(0.0, abs=1e-12)
    assert population_stability_index(reference, rng.beta(8, 2, 2000)) < 0.05
    assert population_stability_index(reference, rng.beta(2, 8, 2000)) > 0.2
    constant = np.full(100, 0.99)  # all edges collapse into one: still defined
    assert population_stability_index(constant, constant) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="0 reference and 3 current"):
        population_stability_index(np.array([]), np.array([0.1, 0.2, 0.3]))


def test_drift_report():
    rng = np.random.default_rng(3)
    reference = rng.beta(8, 2, 500)
    waiting = drift_report(reference, reference[:20], reference_name="eval split of v3 (500 images)")
    assert waiting.value is None and waiting.alert is False
    assert "30 more predictions" in waiting.message and waiting.n_current == 20 and waiting.n_reference == 500
    shifted = drift_report(reference, rng.beta(2, 8, 200), reference_name="eval split of v3 (500 images)")
    assert isinstance(shifted, DriftReport) and shifted.alert and shifted.value > 0.2
    assert shifted.statistic == "PSI of top-1 confidence" and shifted.threshold == 0.2
    assert "eval split of v3" in shifted.message
    steady = drift_report(reference, rng.beta(8, 2, 500), reference_name="first 500 predictions of v3")
    assert not steady.alert and steady.value < 0.2
    assert json.loads(json.dumps(steady.to_json())) == steady.to_json()
    with pytest.raises(ValueError, match="non-empty reference"):
        drift_report(np.array([]), reference, reference_name="nothing")


def test_drift_of_logged_scores_against_the_first_predictions(log):
    rng = np.random.default_rng(5)
    for i, score in enumerate(np.concatenate([rng.beta(8, 2, 200), rng.beta(2, 8, 100)])):
        log.log(record(time=float(i), scores=(float(score),), labels=("cat",)))
    assert log.flush()
    reference = log.first_scores("v1", 200)
    report = drift_report(reference, log.scores(version="v1", limit=100), reference_name="first 200 predictions of v1")
    assert report.alert and report.n_reference == 200 and report.n_current == 100
