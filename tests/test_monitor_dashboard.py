"""The Monitor tab's data functions on real prediction logs: an empty one, and 100,000 rows over two
versions and seven days with feedback and known scores (no model is loaded, no server started)."""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import numpy as np
import pandas as pd
import pytest

from tests.conftest import MAINTAINER_PASSWORD
from PIL import Image

from classifr.core.errors import VersionNotFoundError
from classifr.monitoring.report import (
    BASELINE_PREDICTIONS,
    RECENT_PREDICTIONS,
    WINDOWS,
    monitor_summary,
    version_drift,
    window_start,
)
from classifr.monitoring.drift import PSI_THRESHOLD
from classifr.monitoring.log import PredictionLog
from classifr.monitoring.schema import INSERT_PREDICTION_SQL
from classifr.versions.registry import VersionInfo
from classifr.ui.monitor import (
    SHIFT_HEADER,
    SUMMARY_HEADERS,
    VERSION_HEADERS,
    alerts_markdown,
    bad_caption,
    bucket_seconds,
    confidence_frame,
    confusion_rows,
    gallery_items,
    summary_rows,
    version_rows,
    volume_frame,
)

DAY = 86400.0
NOW = 19676 * DAY  # 2023-11-15 00:00 UTC: a whole day, so every bucket size divides the windows exactly
N = 100_000
SPAN = 7 * DAY
STEP = SPAN / N  # one prediction every 6.048 s, alternately v1 and v2; the newest is at NOW - STEP
SERVING = {"production": "v1", "candidate": "v2"}
PSI = "PSI of top-1 confidence"


def _psi_cell(row: list) -> str:
    return row[SUMMARY_HEADERS.index(SHIFT_HEADER)]


# --- an empty log --------------------------------------------------------------------------------


@pytest.fixture
def empty_log(tmp_path: Path):
    with PredictionLog(tmp_path / "monitoring" / "predictions.sqlite") as log:
        yield log


def test_an_empty_log_renders_an_empty_dashboard(empty_log):
    summary = monitor_summary(empty_log, since=window_start("24h", now=NOW), serving={"production": "v1"})
    assert summary["total"] == 0 and summary["by_version"] == {}
    assert summary["corrections"] == [] and summary["log"] == {"dropped": 0, "failed": 0}
    assert summary["serving"] == {"production": "v1"}
    assert alerts_markdown(summary) == "No predictions in this window yet. Classify some images, then refresh."
    assert summary_rows(summary) == [] and confusion_rows(summary) == []
    json.dumps(summary)  # gr.JSON shows it as is

    volume = volume_frame(empty_log.volume(bucket_s=bucket_seconds(NOW - DAY, NOW), since=NOW - DAY))
    assert list(volume.columns) == ["time", "version", "predictions"] and volume.empty
    assert isinstance(volume["time"].dtype, pd.DatetimeTZDtype) and str(volume["time"].dt.tz) == "UTC"
    assert list(volume_frame([]).columns) == ["time", "version", "predictions"] and volume_frame([]).empty

    histogram = confidence_frame(empty_log.confidence_histogram(since=NOW - DAY))
    assert list(histogram.columns) == ["confidence", "predictions"]
    assert histogram["predictions"].tolist() == [0] * 10
    assert histogram["confidence"].tolist()[0] == "0.0–0.1" and histogram["confidence"].tolist()[-1] == "0.9–1.0"
    assert list(confidence_frame([]).columns) == ["confidence", "predictions"] and confidence_frame([]).empty

    # The plots of the tab take these frames as they are.
    line = gr.LinePlot(x="time", y="predictions", color="version", y_lim=[0, None]).postprocess(volume)
    assert line.columns == ["time", "version", "predictions"] and line.data == []
    bars = gr.BarPlot(x="confidence", y="predictions", y_lim=[0, None]).postprocess(histogram)
    assert len(bars.data) == 10


def test_an_empty_log_has_no_drift_reference(empty_log):
    report = version_drift(empty_log, None, "v1", since=None)
    assert report.statistic == PSI and report.value is None and report.alert is False
    assert report.n_reference == 0
    assert report.message == "550 more predictions of v1 needed: its first 500 are the reference (0 so far), then 50 to compare"


def test_lost_predictions_are_announced(empty_log):
    summary = monitor_summary(empty_log)
    summary.update(total=1, by_version={}, log={"dropped": 2, "failed": 1})
    assert "**⚠ 3 predictions could not be logged**" in alerts_markdown(summary)


# --- a large seeded log --------------------------------------------------------------------------


def _seed() -> dict[str, np.ndarray]:
    """The rows of the large log as arrays: row i is the (i+1)-th written (its rowid)."""
    rng = np.random.default_rng(7)
    i = np.arange(N)
    versions = np.where(i % 2 == 0, "v1", "v2")
    times = NOW - SPAN + STEP * i
    scores = rng.uniform(0.3, 1.0, N)  # v2: the same distribution all week
    v1 = np.flatnonzero(versions == "v1")
    old, new = v1[:BASELINE_PREDICTIONS], v1[BASELINE_PREDICTIONS:]
    scores[old] = np.clip(rng.normal(0.9, 0.03, old.size), 0.0, 1.0)  # v1's first predictions: sure
    scores[new] = np.clip(rng.normal(0.2, 0.05, new.size), 0.0, 1.0)  # then: unsure
    scores = np.round(scores, 6)
    latencies = np.round(rng.uniform(5.0, 120.0, N), 3)
    labels = np.array([f"label{k % 7}" for k in range(N)])
    feedback = np.full(N, None, dtype=object)
    reviewed = np.flatnonzero(i % 97 == 0)
    feedback[reviewed] = np.where((reviewed // 97) % 3 == 0, "corrected", "confirmed")
    return {"version": versions, "time": times, "score": scores, "latency": latencies, "label": labels,
            "feedback": feedback}  # fmt: skip


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """(log, rows): 100,000 predictions written with the log's own INSERT statement (the writer
    thread would take seconds), every 97th with feedback: a third corrected to 'other', the rest confirmed."""
    rows = _seed()
    path = tmp_path_factory.mktemp("dashboard") / "predictions.sqlite"
    PredictionLog(path).close()  # creates the schema
    with sqlite3.connect(path) as conn:
        conn.executemany(
            INSERT_PREDICTION_SQL,
            (
                (f"{k:032x}", float(rows["time"][k]), str(rows["version"][k]), "production", "ui", str(rows["label"][k]),
                 float(rows["score"][k]), json.dumps([[str(rows["label"][k]), float(rows["score"][k])]]),
                 float(rows["latency"][k]), f"{k:064x}", 224, 224, 20_000, None, None)
                for k in range(N)
            ),
        )  # fmt: skip
        conn.executemany(
            "UPDATE predictions SET feedback = ?, true_label = CASE WHEN ? = 'corrected' THEN 'other' ELSE label END, "
            "feedback_time = time + 60 WHERE rowid = ?",
            [(kind, kind, k + 1) for k, kind in enumerate(rows["feedback"]) if kind is not None],
        )
    log = PredictionLog(path)
    yield log, rows
    log.close()


def _expected(rows: dict[str, np.ndarray], version: str, since: float | None) -> dict:
    chosen = (rows["version"] == version) & (rows["time"] >= (since if since is not None else -np.inf))
    scores, feedback = rows["score"][chosen], rows["feedback"][chosen]
    confirmed, corrected = int((feedback == "confirmed").sum()), int((feedback == "corrected").sum())
    p50, p95 = np.percentile(rows["latency"][chosen], [50, 95])
    n = int(chosen.sum())
    return {
        "predictions": n, "mean": float(scores.mean()), "low": int((scores < 0.5).sum()),
        "confirmed": confirmed, "corrected": corrected, "p50": float(p50), "p95": float(p95),
    }  # fmt: skip


@pytest.mark.parametrize("window", ["all", "7d", "24h", "1h"])
@pytest.mark.slow  # over 0.25 s: outside the edit loop's fast subset
def test_summary_rows_have_exact_totals_per_version(seeded, window):
    log, rows = seeded
    since = window_start(window, now=NOW)
    summary = monitor_summary(log, since=since, serving=SERVING)
    table = summary_rows(summary)
    assert [row[0] for row in table] == ["v1", "v2"] and all(len(row) == len(SUMMARY_HEADERS) for row in table)
    expected_total = int((rows["time"] >= (since if since is not None else -np.inf)).sum())
    assert summary["total"] == expected_total == sum(row[2] for row in table)
    if window in ("all", "7d"):
        assert expected_total == N
    for row, role in zip(table, ("production", "candidate")):
        want = _expected(rows, row[0], since)
        n, reviewed = want["predictions"], want["confirmed"] + want["corrected"]
        assert row[1] == role
        assert row[2] == n
        assert row[3] == round(want["mean"], 3)
        assert row[4] == f"{want['low'] / n:.1%}"
        assert row[5] == f"{reviewed / n:.1%}"
        assert row[6] == f"{want['corrected'] / n:.1%}"
        assert row[7] == (f"{want['confirmed'] / reviewed:.1%}" if reviewed else "n/a")
        assert (row[8], row[9]) == (round(want["p50"], 1), round(want["p95"], 1))
        stats = summary["by_version"][row[0]]
        assert (stats["confirmed"], stats["corrected"]) == (want["confirmed"], want["corrected"])


def test_all_seeded_rows_and_feedback_are_counted(seeded):
    _, rows = seeded
    per_version = {v: _expected(rows, v, None) for v in ("v1", "v2")}
    assert [per_version[v]["predictions"] for v in ("v1", "v2")] == [N // 2, N // 2]
    # Feedback falls on even rows (v1) and odd rows (v2) alike.
    assert all(per_version[v]["confirmed"] > 0 and per_version[v]["corrected"] > 0 for v in per_version)
    reviewed = sum(per_version[v]["confirmed"] + per_version[v]["corrected"] for v in per_version)
    assert reviewed == len(range(0, N, 97))


def test_drift_is_reported_per_version_and_alerts_on_the_shifted_one(seeded):
    log, rows = seeded
    summary = monitor_summary(log, since=window_start("24h", now=NOW), serving=SERVING)
    drift = {version: row["drift"] for version, row in summary["by_version"].items()}
    assert set(drift) == {"v1", "v2"}
    for version, report in drift.items():
        assert report["statistic"] == PSI and report["threshold"] == PSI_THRESHOLD
        assert report["reference"] == f"first {BASELINE_PREDICTIONS} predictions of {version}"
        assert report["n_reference"] == BASELINE_PREDICTIONS and report["n_current"] == RECENT_PREDICTIONS
    # v1 started near 0.9 and now answers near 0.2; v2 never changed.
    assert drift["v1"]["alert"] is True and drift["v1"]["value"] > 2.0
    assert drift["v2"]["alert"] is False and drift["v2"]["value"] < 0.1

    table = {row[0]: row for row in summary_rows(summary)}
    assert _psi_cell(table["v1"]) == f"{drift['v1']['value']:.3f} ⚠ shifted"
    assert _psi_cell(table["v2"]) == f"{drift['v2']['value']:.3f}"

    text = alerts_markdown(summary)
    lines = text.splitlines()
    assert len(lines) == 2 and "could not be logged" not in text
    assert lines[0].startswith("- **⚠ The confidence of v1 has shifted:** confidence shift ") and "first 500 predictions of v1" in lines[0]
    assert lines[1].startswith("- v2: confidence shift ") and "no significant shift from first 500 predictions of v2" in lines[1]
    assert "v2 has shifted" not in text and "PSI" not in text


def test_drift_compares_only_predictions_after_the_baseline(seeded):
    """A 1h window of v1 holds only shifted rows; its first 500 predictions are the reference, not the current."""
    log, rows = seeded
    report = version_drift(log, None, "v1", since=window_start("1h", now=NOW))
    in_window = int(((rows["version"] == "v1") & (rows["time"] >= NOW - 3600)).sum())
    assert report.n_current == min(in_window, RECENT_PREDICTIONS) and report.alert


def test_confusions_come_from_corrections(seeded):
    log, rows = seeded
    summary = monitor_summary(log)  # every correction of the log ("all")
    corrected = rows["label"][rows["feedback"] == "corrected"]
    expected = {(label, "other"): int((corrected == label).sum()) for label in set(corrected.tolist())}
    got = confusion_rows(summary)
    assert {(predicted, true): n for predicted, true, n in got} == expected
    assert [n for *_, n in got] == sorted((n for *_, n in got), reverse=True)
    assert all(predicted != true for predicted, true, _ in got)  # confirmations are not confusions


@pytest.mark.parametrize(("window", "bucket"), [("1h", 60.0), ("24h", 1800.0), ("7d", 6 * 3600.0), ("30d", DAY)])
def test_buckets_keep_each_window_to_sixty_points(seeded, window, bucket):
    log, rows = seeded
    since = window_start(window, now=NOW)
    assert bucket_seconds(since, NOW) == bucket and WINDOWS[window] / bucket <= 60
    frame = volume_frame(log.volume(bucket_s=bucket, since=since))
    assert list(frame.columns) == ["time", "version", "predictions"]
    assert frame["time"].nunique() <= 60 and set(frame["version"]) == {"v1", "v2"}
    assert int(frame["predictions"].sum()) == int((rows["time"] >= since).sum())
    assert frame["time"].min() >= pd.Timestamp(since, unit="s", tz="UTC")


def test_bucket_seconds_edges():
    assert bucket_seconds(None, NOW) == DAY  # "all": days
    assert bucket_seconds(NOW, NOW) == 60.0  # an empty span counts as a minute
    assert bucket_seconds(NOW - 2 * 3600, NOW) == 300.0
    assert bucket_seconds(NOW - 10 * 3600, NOW) == 1800.0
    assert bucket_seconds(NOW - 2 * DAY, NOW) == 3600.0


def test_the_24h_volume_sums_to_the_rows_of_that_window(seeded):
    log, rows = seeded
    since = window_start("24h", now=NOW)
    frame = volume_frame(log.volume(bucket_s=bucket_seconds(since, NOW), since=since))
    in_window = rows["time"] >= since
    assert int(frame["predictions"].sum()) == int(in_window.sum()) == log.count(since=since)
    per_version = frame.groupby("version")["predictions"].sum().to_dict()
    assert per_version == {v: int((in_window & (rows["version"] == v)).sum()) for v in ("v1", "v2")}
    assert frame["time"].dt.tz is not None and frame["time"].is_monotonic_increasing

    v2 = volume_frame(log.volume(bucket_s=3600.0, version="v2", since=since))
    assert set(v2["version"]) == {"v2"} and int(v2["predictions"].sum()) == per_version["v2"]


def test_the_confidence_histogram_matches_the_scores(seeded):
    log, rows = seeded
    since = window_start("7d", now=NOW)
    frame = confidence_frame(log.confidence_histogram(version="v1", since=since))
    scores = rows["score"][rows["version"] == "v1"]
    expected = np.bincount(np.minimum((scores * 10).astype(int), 9), minlength=10)
    assert frame["predictions"].tolist() == expected.tolist() and int(frame["predictions"].sum()) == N // 2


# --- the reference of drift: a version's eval split ------------------------------------------------


class FakeRegistry:
    """What `_eval_scores` uses of a registry: local_path(version) -> the version's folder."""

    def __init__(self, root: Path, metrics: dict[str, object]) -> None:
        self.root = root
        for version, content in metrics.items():
            folder = root / version
            folder.mkdir(parents=True)
            if content is not None:
                text = content if isinstance(content, str) else json.dumps(content)
                (folder / "metrics.json").write_text(text)

    def local_path(self, version: str) -> Path:
        folder = self.root / version
        if not folder.is_dir():
            raise VersionNotFoundError(f"unknown model version {version!r}")
        return folder


def test_drift_against_the_eval_split_in_metrics_json(seeded, tmp_path):
    log, _ = seeded
    rng = np.random.default_rng(1)
    eval_scores = np.round(rng.uniform(0.3, 1.0, 300), 4).tolist()
    registry = FakeRegistry(tmp_path, {"v1": {"accuracy": 0.8}, "v2": {"accuracy": 0.9, "reference_scores": eval_scores}})

    report = version_drift(log, registry, "v2", since=window_start("24h", now=NOW))
    assert report.reference == "held-out test photos of v2 (300 images)"
    assert report.n_reference == 300 and report.n_current == RECENT_PREDICTIONS  # nothing trimmed: not from the log
    assert report.statistic == PSI and report.value is not None and not report.alert
    assert "no significant shift from held-out test photos of v2 (300 images)" in report.message

    # v1's metrics.json has no reference_scores: its first predictions are the reference.
    assert version_drift(log, registry, "v1", since=None).reference == f"first {BASELINE_PREDICTIONS} predictions of v1"

    summary = monitor_summary(log, registry=registry, since=window_start("24h", now=NOW), serving=SERVING)
    assert summary["by_version"]["v2"]["drift"]["reference"] == "held-out test photos of v2 (300 images)"
    lines = alerts_markdown(summary).splitlines()
    assert lines[0].startswith("- **⚠ The confidence of v1 has shifted:**")
    assert "held-out test photos of v2 \\(300 images\\)" in lines[1]  # escaped for Markdown


def test_a_shifted_eval_split_raises_an_alert(seeded, tmp_path):
    log, _ = seeded
    registry = FakeRegistry(tmp_path, {"v2": {"reference_scores": [0.05, 0.1, 0.15, 0.2] * 50}})
    report = version_drift(log, registry, "v2", since=None)
    assert report.reference == "held-out test photos of v2 (200 images)" and report.alert and report.value >= PSI_THRESHOLD


@pytest.mark.parametrize(
    "metrics",
    [None, {"reference_scores": []}, {"reference_scores": None}, "{not json"],
    ids=["no metrics.json", "empty list", "null", "broken json"],
)
def test_without_usable_eval_scores_the_log_baseline_is_the_reference(seeded, tmp_path, metrics):
    log, _ = seeded
    registry = FakeRegistry(tmp_path, {"v2": metrics})
    report = version_drift(log, registry, "v2", since=None)
    assert report.reference == f"first {BASELINE_PREDICTIONS} predictions of v2" and report.value is not None


def test_a_version_unknown_to_the_registry_falls_back_to_the_log(seeded, tmp_path):
    log, _ = seeded
    registry = FakeRegistry(tmp_path, {})  # neither v1 nor v2 is in it (VersionNotFoundError is a KeyError)
    summary = monitor_summary(log, registry=registry, since=window_start("24h", now=NOW))
    assert {row["drift"]["reference"] for row in summary["by_version"].values()} == {
        f"first {BASELINE_PREDICTIONS} predictions of v1", f"first {BASELINE_PREDICTIONS} predictions of v2",
    }  # fmt: skip


# --- galleries and the versions table --------------------------------------------------------------


def _jpeg(color: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_gallery_items_show_only_rows_that_kept_their_image(tmp_path):
    path = tmp_path / "predictions.sqlite"
    PredictionLog(path).close()
    with sqlite3.connect(path) as conn:
        conn.executemany(
            INSERT_PREDICTION_SQL,
            [(f"p{k}", 1000.0 + k, "v1", "production", "ui", "sandal", 0.5 + k / 10, "[]", 10.0, f"{k:064x}",
              8, 8, 100, None, None) for k in range(3)],
        )  # fmt: skip
        conn.execute("UPDATE predictions SET feedback = 'corrected', true_label = 'clog', feedback_time = time")
        conn.executemany("INSERT INTO images VALUES (?, ?)", [("p0", _jpeg("red")), ("p2", _jpeg("blue"))])
    with PredictionLog(path) as log:
        service = SimpleNamespace(logged_image=lambda prediction_id, grant: log.image(prediction_id))
        rows = log.gallery("corrected")
        assert [row["id"] for row in rows] == ["p2", "p1", "p0"] and [row["has_image"] for row in rows] == [True, False, True]
        items, shown = gallery_items(service, rows, bad_caption, grant=None)
    assert [row["id"] for row in shown] == ["p2", "p0"]
    # Worst first: the most confident mistake; each caption says when (24-hour clock, UTC).
    assert [caption for _, caption in items] == [
        "sandal (70%) → clog · v1 · Jan 01 00:16", "sandal (50%) → clog · v1 · Jan 01 00:16",
    ]
    assert all(isinstance(picture, Image.Image) and picture.size == (8, 8) for picture, _ in items)


def test_version_rows_newest_first():
    versions = [
        VersionInfo("v1", None, "2024-01-01", 1000, ("production",), {}),
        VersionInfo("v2", "v1", "2024-02-01", 1002, ("candidate",),
                    {"strategy": "head", "labels_added": ["clog", "hat"], "accuracy": 0.875, "macro_f1": 0.5,
                     "gate_passed": False}),
    ]  # fmt: skip
    service = SimpleNamespace(list_versions=lambda: versions)
    rows = version_rows(service)
    assert all(len(row) == len(VERSION_HEADERS) for row in rows)
    assert rows == [
        ["v2", "v1", "candidate", "head", 1002, "clog, hat", "87.5%", "50.0%", "failed"],
        ["v1", "—", "production", "pretrained", 1000, "", "n/a", "n/a", "n/a"],
    ]


# --- the time chart picks its span from the data -------------------------------------------------------


def test_the_time_chart_shows_three_day_old_traffic_in_the_24h_window(tmp_path):
    from classifr.ui.monitor import volume_chart

    path = tmp_path / "predictions.sqlite"
    PredictionLog(path).close()
    old = NOW - 3 * DAY
    with sqlite3.connect(path) as conn:
        conn.executemany(
            INSERT_PREDICTION_SQL,
            [(f"p{k}", old + 600.0 * k, "v1", "production", "ui", "sandal", 0.5, "[]", 10.0, f"{k:064x}",
              8, 8, 100, None, None) for k in range(12)],
        )  # fmt: skip
    with PredictionLog(path) as log:
        service = SimpleNamespace(
            prediction_time_span=lambda since=None, version=None: log.time_span(since=since, version=version),
            prediction_volume=lambda bucket_s, version=None, since=None: log.volume(bucket_s=bucket_s, version=version, since=since),
        )
        since = window_start("24h", now=NOW)
        frame, note = volume_chart(service, since, None)
        assert frame["predictions"].sum() == 12 and frame["time"].min() >= pd.Timestamp(old, unit="s", tz="UTC")
        assert len(frame) >= 6  # buckets fitted to the 2-hour span, not one point per day
        assert (frame["predictions"] == 0).any()  # empty buckets are drawn as 0, not bridged by the line
        assert note.startswith("None in the chosen window: all predictions, ") and "UTC" in note
        summary = monitor_summary(log, since=since)
        newest = log.time_span()[1]
        assert alerts_markdown(summary, newest, NOW).startswith("No predictions in this time window: the newest is 3 days old.")
        # Traffic inside the window is charted over its own span.
        frame, note = volume_chart(service, None, None)
        assert frame["predictions"].sum() == 12 and not note.startswith("None")
        empty = SimpleNamespace(prediction_time_span=lambda since=None, version=None: None)
        frame, note = volume_chart(empty, since, None)
        assert frame.empty and note == "No predictions yet."


# --- review labels: live, and a new one only after a question ------------------------------------------

PASSWORD = MAINTAINER_PASSWORD


@pytest.fixture
def tiny_service(maintained_service):
    return maintained_service


def _handler(demo: gr.Blocks, name: str):
    [fn] = [f.fn for f in demo.fns.values() if getattr(f.fn, "__name__", "") == name]
    return fn


def test_a_typed_hat_asks_before_creating_it_and_never_becomes_cowboy_hat(tiny_service, clothing_dir):
    from classifr.ui.app import build_app
    from classifr.ui.monitor import review_answer

    photo = sorted((clothing_dir / "test" / "hat").glob("*.jpg"))[0]
    demo = build_app(tiny_service)  # built before the category exists: its lists must not be frozen
    tiny_service.create_category("cowboy hat")
    prediction = tiny_service.predict(photo)
    assert tiny_service.flush_prediction_log()
    grant = tiny_service.maintainer_grant(PASSWORD)
    row = {"id": prediction.id}
    request = SimpleNamespace(client=SimpleNamespace(host="127.0.0.1"), username=None, headers={})

    # The list of labels is read again on a pick: the category made after start is there.
    [review_label] = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "monitor-review-label"]
    assert review_label.allow_custom_value is False  # typed text never picks the first match
    [pick] = [f.fn for f in demo.fns.values() if getattr(f.fn, "__name__", "") == "pick"
              and "review" in str([getattr(o, "elem_id", "") for o in f.outputs])]
    _, choices, _ = pick([row | {"label": "cat"}], SimpleNamespace(index=0))
    assert "cowboy hat" in choices["choices"] and choices["value"] == "cat"

    assert review_answer(tiny_service, "cat", "Cowboy Hat") == ("store", "cowboy hat")  # a known one, its spelling
    assert review_answer(tiny_service, "dog", None) == ("store", "dog")
    correct = _handler(demo, "correct_review")
    status, kept, question_row, question, asked = correct(row, None, "hat", grant, request, None)
    assert question_row["visible"] is True and asked == "hat" and status == ""
    assert "Create the new category **hat**?" in question and "cowboy hat" in question  # the near-duplicate
    assert tiny_service.dataset.rows() == [] and "hat" not in tiny_service.label_choices()  # nothing yet

    status, *_ = _handler(demo, "create_and_store")(kept, asked, grant, request, None)
    assert "Stored as **hat**" in status
    assert [r.label for r in tiny_service.dataset.rows()] == ["hat"]
    assert "hat" in tiny_service.label_choices() and "cowboy hat" in tiny_service.label_choices()
