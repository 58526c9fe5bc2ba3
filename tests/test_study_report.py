"""study.report: the report folder of `classifr benchmark`, from synthetic run records."""

from __future__ import annotations

import copy
import csv
import json
import math
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

from classifr.core.errors import ClassifrError
from study import report as benchmark_report
from study.report import (
    CHART_FILES,
    confusion_analysis,
    load_report,
    recommendation,
    write_report,
)

LABELS = ["dress", "hat", "longsleeve", "outwear", "pants", "shirt", "shoes", "shorts", "skirt", "t-shirt"]
DATA_FILES = {"study.json", "runs.json", "runs.csv", "report.md"}


def _confusion(mistakes: dict[tuple[str, str], int], totals: dict[str, int] | None = None) -> list[list[int]]:
    """A matrix with `mistakes` off the diagonal and the rest of each row's images (20 by default) on it."""
    size = len(LABELS)
    matrix = [[0] * size for _ in range(size)]
    for (true, predicted), count in mistakes.items():
        matrix[LABELS.index(true)][LABELS.index(predicted)] = count
    for i, label in enumerate(LABELS):
        matrix[i][i] = (totals or {}).get(label, 20) - sum(matrix[i])
    return matrix


# shirt, t-shirt and longsleeve are taken for each other; dress and skirt too; pants -> shorts once
# (2.5% average: below the 3% rule); shoes never.
HAND_MADE = _confusion(
    {
        ("shirt", "t-shirt"): 4,
        ("t-shirt", "shirt"): 3,
        ("longsleeve", "shirt"): 3,
        ("shirt", "longsleeve"): 2,
        ("t-shirt", "longsleeve"): 1,
        ("dress", "skirt"): 2,
        ("skirt", "dress"): 2,
        ("pants", "shorts"): 1,
    },
    totals={"skirt": 10},
)


def _f1(base: float) -> dict[str, float]:
    return {label: round(min(1.0, base + 0.01 * (i - 5)), 3) for i, label in enumerate(LABELS)}


def _run(name: str, family: str, **values) -> dict:
    record = {
        "name": name,
        "family": family,
        "backbone": None,
        "strategy": "head",
        "features": "embeddings",
        "hyperparameters": {"epochs": 10, "lr": 0.001},
        "history": [],
        "confusion": _confusion({("shirt", "t-shirt"): 2}),
        "probe_accuracy": None,
        "error": None,
    }
    record.update(values)
    return record


STUDY = {
    "dataset": "clothing-small",
    "preset": "quick",
    "labels": LABELS,
    "train_images": 1000,
    "eval_images": 200,
    "seed": 0,
    "machine": "2 CPU cores, no GPU",
    "started": "2025-01-01T10:00:00+00:00",
    "seconds": 1922.0,
    "probe": {"folder": "/home/me/probe", "images": 37},
}

RUNS = [
    _run(
        "head lite0", "backbone", backbone="tf_efficientnet_lite0", accuracy=0.881, macro_f1=0.866,
        per_class_f1=_f1(0.87), train_seconds=41.0, train_images_per_second=1250.0, latency_ms_batch1=9.8,
        latency_ms_batch32=3.1, parameters=12_810, checkpoint_bytes=52_000, probe_accuracy=0.85,
    ),
    _run(
        "svm pixels", "classic", strategy="svm", features="pixels", accuracy=0.415, macro_f1=0.39,
        per_class_f1=_f1(0.4), train_seconds=8.7, train_images_per_second=115.0, latency_ms_batch1=0.42,
        latency_ms_batch32=0.05, parameters=None, checkpoint_bytes=2_400_000,
    ),
    _run(
        "full lite0", "fine-tune", backbone="tf_efficientnet_lite0", strategy="full", accuracy=0.889,
        macro_f1=0.874, per_class_f1=_f1(0.88), train_seconds=512.0, train_images_per_second=3.9,
        latency_ms_batch1=30.3, latency_ms_batch32=11.2, parameters=3_383_000, checkpoint_bytes=13_600_000,
        probe_accuracy=0.84, confusion=HAND_MADE,
        history=[
            {"epoch": 1, "train_loss": 1.21, "eval_accuracy": 0.71},
            {"epoch": 2, "train_loss": 0.62, "eval_accuracy": 0.84},
            {"epoch": 3, "train_loss": 0.41, "eval_accuracy": 0.889},
        ],
    ),
    _run("random forest pixels", "classic", strategy="random forest", features="pixels",
         error="MemoryError: could not allocate 3.1 GB\nTraceback (most recent call last): ..."),
    _run(
        "cnn scratch aug", "scratch", strategy="scratch", features="images", accuracy=0.512, macro_f1=0.47,
        per_class_f1=_f1(0.5), train_seconds=1204.0, train_images_per_second=8.3, latency_ms_batch1=2.1,
        latency_ms_batch32=0.6, parameters=1_310_000, checkpoint_bytes=5_240_000,
        history=[
            {"epoch": 1, "train_loss": 2.2, "eval_accuracy": 0.2},
            {"epoch": 2, "train_loss": 1.6, "eval_accuracy": None},
            {"epoch": 3, "train_loss": 1.3, "eval_accuracy": 0.512},
        ],
    ),
    _run(
        "svm embeddings", "classic", backbone="tf_efficientnet_lite0", strategy="svm", accuracy=0.842,
        macro_f1=0.83, per_class_f1=_f1(0.83), train_seconds=3.2, train_images_per_second=312.5,
        latency_ms_batch1=9.9, latency_ms_batch32=3.0, parameters=31_000, checkpoint_bytes=410_000,
    ),
]  # fmt: skip

RANKED_NAMES = ["full lite0", "head lite0", "svm embeddings", "cnn scratch aug", "svm pixels", "random forest pixels"]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One report of RUNS, written once for the tests that only read it (charts take a second)."""
    folder = tmp_path_factory.mktemp("bench") / "report"  # not there yet: write_report creates it
    return write_report(folder, STUDY, copy.deepcopy(RUNS))


@pytest.fixture
def no_charts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Skip drawing in tests about the table and the JSON: a report's charts take seconds on 2 cores."""
    monkeypatch.setattr(benchmark_report, "_write_charts", lambda folder, ranked, labels: [])


def _table(markdown: str) -> tuple[list[str], list[list[str]]]:
    rows = [line for line in markdown.splitlines() if line.startswith("| ")]
    cells = [[cell.strip() for cell in row.strip("|").split(" | ")] for row in rows]
    return cells[0], cells[1:]


# --------------------------------------------------------------------------- files


@pytest.mark.slow  # over 0.25 s: outside the edit loop's fast subset
def test_writes_every_file_and_nothing_else(report):
    assert report.name == "report.md"
    assert {path.name for path in report.parent.iterdir()} == DATA_FILES | set(CHART_FILES)  # no .partial left


def test_files_get_the_usual_permissions(report, tmp_path):
    # Written through temporary files, yet readable by the app like any file this process creates.
    plain = tmp_path / "plain.txt"
    plain.write_text("x", encoding="utf-8")
    names = DATA_FILES | set(CHART_FILES)
    modes = {name: (report.parent / name).stat().st_mode & 0o777 for name in names}
    assert modes == dict.fromkeys(names, plain.stat().st_mode & 0o777)


@pytest.mark.parametrize("name", CHART_FILES)
def test_charts_are_real_pngs(report, name):
    path = report.parent / name
    assert path.stat().st_size > 10_000
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
        image.verify()
    assert width > 300 and height > 200


def test_report_embeds_every_chart_with_a_relative_link(report):
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report.read_text(encoding="utf-8"))
    assert sorted(links) == sorted(CHART_FILES)


def test_study_line(report):
    text = report.read_text(encoding="utf-8")
    assert text.startswith("# Benchmark: clothing-small\n")
    assert "Dataset **clothing-small**, preset quick: 10 labels, 1,000 training and 200 evaluation images, seed 0;" in (
        text
    )
    assert "2 CPU cores, no GPU; wall time 32 min 2 s" in text
    assert "Probe: 37 of your own images from `/home/me/probe`." in text


def test_runs_csv_has_one_row_per_run_in_input_order(report):
    with open(report.parent / "runs.csv", newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    assert [row["name"] for row in rows] == [run["name"] for run in RUNS]
    assert rows[0]["accuracy"] == "0.881" and rows[0]["latency_ms_batch1"] == "9.8"
    assert rows[1]["parameters"] == ""  # None
    assert json.loads(rows[0]["hyperparameters"]) == {"epochs": 10, "lr": 0.001}
    assert rows[3]["error"].startswith("MemoryError") and rows[3]["accuracy"] == ""
    assert "confusion" not in rows[0] and "history" not in rows[0]


# --------------------------------------------------------------------------- the summary table


def test_table_rows_in_accuracy_order_with_the_failed_run_last(report):
    header, rows = _table(report.read_text(encoding="utf-8"))
    assert header == [
        "run", "family", "accuracy %", "macro F1 %", "train s", "train img/s", "latency b1 ms",
        "latency b32 ms/img", "parameters", "checkpoint MB", "probe %", "gap points",
    ]  # fmt: skip
    assert [row[0] for row in rows] == RANKED_NAMES
    by_name = {row[0]: row for row in rows}
    assert by_name["full lite0"] == [
        "full lite0", "fine-tune", "88.9", "87.4", "512", "3.9", "30.3", "11.2", "3.4M", "13.6", "84.0", "-4.9",
    ]  # fmt: skip
    assert by_name["head lite0"] == [
        "head lite0", "backbone", "88.1", "86.6", "41", "1,250", "9.8", "3.1", "13k", "0.05", "85.0", "-3.1",
    ]  # fmt: skip
    assert by_name["cnn scratch aug"][4:10] == ["1,204", "8.3", "2.1", "0.60", "1.3M", "5.2"]
    assert by_name["svm embeddings"][8] == "31k"
    assert by_name["svm pixels"][6:10] == ["0.42", "0.05", "–", "2.4"]
    assert by_name["svm pixels"][10:] == ["–", "–"]  # no probe accuracy


def test_failed_run_row_shows_the_first_line_of_its_error(report):
    _, rows = _table(report.read_text(encoding="utf-8"))
    failed = rows[-1]
    assert failed[:3] == ["random forest pixels", "classic", "failed: MemoryError: could not allocate 3.1 GB"]
    assert failed[3:] == ["–"] * 9


def test_no_probe_columns_without_probe_accuracies(tmp_path, no_charts):
    runs = [{**copy.deepcopy(run), "probe_accuracy": None} for run in RUNS]
    report = write_report(tmp_path, {**STUDY, "probe": None}, runs)
    header, _ = _table(report.read_text(encoding="utf-8"))
    assert header[-1] == "checkpoint MB" and "probe %" not in header
    assert "Probe:" not in report.read_text(encoding="utf-8")


def test_report_has_the_recommendation_and_the_confusion_analysis(report):
    text = report.read_text(encoding="utf-8")
    assert f"**Recommendation:** {recommendation(RUNS)}" in text
    assert "## Where the best run (full lite0) goes wrong" in text
    assert "- **shirt → t-shirt**: 4 images (20% of shirt)" in text
    assert "- **skirt → dress**: 2 images (20% of skirt)" in text
    assert "longsleeve, shirt, t-shirt; dress, skirt." in text


# --------------------------------------------------------------------------- rewriting a folder


@pytest.mark.slow  # over 0.25 s: outside the edit loop's fast subset
def test_rewrite_removes_charts_that_no_longer_have_data(report, tmp_path):
    folder = tmp_path / "again"
    shutil.copytree(report.parent, folder)  # a complete earlier report, learning curves included
    assert (folder / "learning_curves.png").is_file()
    without_history = [{**copy.deepcopy(run), "history": []} for run in RUNS]
    report = write_report(folder, STUDY, without_history)
    assert not (folder / "learning_curves.png").exists()
    assert "learning_curves.png" not in report.read_text(encoding="utf-8")
    assert (folder / "accuracy_vs_latency.png").is_file()


def test_all_runs_failed(tmp_path):
    runs = [_run("a", "classic", error="boom"), _run("b", "scratch", error="CUDA out of memory")]
    report = write_report(tmp_path, STUDY, runs)
    text = report.read_text(encoding="utf-8")
    assert "**Recommendation:** No run finished: see the errors above." in text
    assert not any((tmp_path / name).exists() for name in CHART_FILES)
    assert "![" not in text
    _, rows = _table(text)
    assert [row[2] for row in rows] == ["failed: boom", "failed: CUDA out of memory"]


# --------------------------------------------------------------------------- JSON


def test_nan_and_infinity_become_null_in_runs_json(tmp_path, no_charts):
    runs = copy.deepcopy(RUNS)
    runs[0]["latency_ms_batch32"] = float("nan")
    runs[2]["history"][1]["train_loss"] = float("nan")  # a diverged epoch
    runs[5]["hyperparameters"]["C"] = float("inf")
    report = write_report(tmp_path, STUDY, runs)
    text = (tmp_path / "runs.json").read_text(encoding="utf-8")
    assert "NaN" not in text and "Infinity" not in text
    stored = json.loads(text)
    assert stored[0]["latency_ms_batch32"] is None
    assert stored[2]["history"][1]["train_loss"] is None
    assert stored[5]["hyperparameters"]["C"] is None
    _, rows = _table(report.read_text(encoding="utf-8"))
    assert {row[0]: row for row in rows}["head lite0"][7] == "–"


def test_load_report_round_trips(report):
    study, runs = load_report(report.parent)
    assert study == STUDY
    assert runs == RUNS


def test_load_report_names_a_corrupt_runs_json(tmp_path):
    write_report(tmp_path, STUDY, [_run("a", "classic", error="boom")])
    (tmp_path / "runs.json").write_text('[{"name": "a", ', encoding="utf-8")
    with pytest.raises(ClassifrError, match=r"runs\.json"):
        load_report(tmp_path)


def test_load_report_names_a_missing_study_json(tmp_path):
    with pytest.raises(ClassifrError, match=r"study\.json.*missing"):
        load_report(tmp_path)


def test_load_report_rejects_runs_json_that_is_not_a_list(tmp_path):
    write_report(tmp_path, STUDY, [_run("a", "classic", error="boom")])
    (tmp_path / "runs.json").write_text('{"name": "a"}', encoding="utf-8")
    with pytest.raises(ClassifrError, match=r"runs\.json"):
        load_report(tmp_path)


# --------------------------------------------------------------------------- input checks


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda runs: runs[1].update(name="head lite0"), r"duplicates \['head lite0'\]"),
        (lambda runs: runs[0].update(accuracy=1.5), r"'head lite0'.*accuracy.*1\.5"),
        (lambda runs: runs[0].update(accuracy=float("nan")), r"'head lite0'.*accuracy"),
        (lambda runs: runs[2].update(confusion=HAND_MADE[:9]), r"'full lite0'.*10x10.*9 rows"),
        (lambda runs: runs[0].update(name=""), r"run 0 needs a non-empty name"),
    ],
)
def test_write_report_rejects_bad_records_before_writing(tmp_path, change, message):
    runs = copy.deepcopy(RUNS)
    change(runs)
    folder = tmp_path / "never"
    with pytest.raises(ClassifrError, match=message):
        write_report(folder, STUDY, runs)
    assert not folder.exists()


def test_write_report_rejects_study_without_labels(tmp_path):
    with pytest.raises(ClassifrError, match=r"study\['labels'\].*None"):
        write_report(tmp_path, {**STUDY, "labels": None}, [])


# --------------------------------------------------------------------------- confusion analysis


def test_confusion_analysis_pairs_and_groups():
    analysis = confusion_analysis(LABELS, HAND_MADE)
    pairs = [(p["true"], p["predicted"], p["count"], p["rate"]) for p in analysis["pairs"]]
    # Most images first, then the larger share of the true class (skirt has 10 images, dress 20),
    # then label order: dress -> skirt comes before shirt -> longsleeve (both 2 of 20).
    assert pairs == [
        ("shirt", "t-shirt", 4, pytest.approx(0.2)),
        ("longsleeve", "shirt", 3, pytest.approx(0.15)),
        ("t-shirt", "shirt", 3, pytest.approx(0.15)),
        ("skirt", "dress", 2, pytest.approx(0.2)),
        ("dress", "skirt", 2, pytest.approx(0.1)),
    ]
    assert analysis["groups"] == [["longsleeve", "shirt", "t-shirt"], ["dress", "skirt"]]


def test_confusion_analysis_top_covers_every_confused_pair():
    pairs = confusion_analysis(LABELS, HAND_MADE, top=50)["pairs"]
    assert len(pairs) == 8
    assert ("pants", "shorts") in {(p["true"], p["predicted"]) for p in pairs}
    assert all(p["true"] != "shoes" and p["predicted"] != "shoes" for p in pairs)


def test_perfect_diagonal_has_no_pairs_and_no_groups():
    assert confusion_analysis(LABELS, _confusion({})) == {"pairs": [], "groups": []}


def test_single_label():
    assert confusion_analysis(["hat"], [[7]]) == {"pairs": [], "groups": []}


def test_all_zero_row_is_not_divided_by_zero():
    # No hat images at all, but 5 of 10 dresses taken for hats: the pair still forms a group.
    matrix = _confusion({("dress", "hat"): 5}, totals={"hat": 0, "dress": 10})
    analysis = confusion_analysis(LABELS, matrix)
    assert analysis["pairs"] == [{"true": "dress", "predicted": "hat", "count": 5, "rate": 0.5}]
    assert analysis["groups"] == [["dress", "hat"]]
    assert not any(math.isnan(p["rate"]) for p in analysis["pairs"])


def test_confusion_analysis_rejects_mismatched_sizes():
    with pytest.raises(ClassifrError, match=r"10x10 to match the 10 labels, got 9 rows"):
        confusion_analysis(LABELS, HAND_MADE[:9])
    ragged = copy.deepcopy(HAND_MADE)
    ragged[3] = ragged[3][:4]
    with pytest.raises(ClassifrError, match=r"row 3 \('outwear'\) has 4 columns"):
        confusion_analysis(LABELS, ragged)
    with pytest.raises(ClassifrError, match=r"confusion\[0\]\[1\] is -1"):
        confusion_analysis(["a", "b"], [[1, -1], [0, 2]])


# --------------------------------------------------------------------------- recommendation


def _quick(name: str, accuracy: float, latency: float, train: float = 100.0, probe: float | None = None) -> dict:
    return _run(name, "backbone", accuracy=accuracy, latency_ms_batch1=latency, train_seconds=train,
                probe_accuracy=probe)  # fmt: skip


def test_recommends_the_fastest_run_within_one_point():
    assert recommendation(RUNS) == (
        "Choose head lite0: 88.1% accuracy at 9.8 ms per image, within 1 point of the most accurate run "
        "(full lite0, 88.9%) and 3.1x faster to serve; it also trains 12.5x faster (41 s against 8 min 32 s)."
    )


def test_training_time_is_mentioned_only_when_much_faster():
    runs = [_quick("slow", 0.90, 30.0, train=100.0), _quick("fast", 0.895, 10.0, train=80.0)]
    assert recommendation(runs) == (
        "Choose fast: 89.5% accuracy at 10.0 ms per image, within 1 point of the most accurate run "
        "(slow, 90.0%) and 3.0x faster to serve."
    )


def test_recommends_the_best_when_it_is_also_the_fastest():
    runs = [_quick("close", 0.895, 20.0), _quick("best", 0.90, 5.0), _quick("far", 0.80, 1.0)]
    assert recommendation(runs) == (
        "Choose best: 90.0% accuracy at 5.0 ms per image, "
        "the most accurate run and the fastest to serve of those within 1 point of it."
    )


def test_recommends_the_best_when_no_run_is_close():
    runs = [_quick("best", 0.90, 30.0), _quick("quick", 0.88, 1.0)]
    assert recommendation(runs) == (
        "Choose best: 90.0% accuracy at 30.0 ms per image, the most accurate run; "
        "no other run comes within 1 point of it."
    )


def test_equal_accuracy_goes_to_the_lower_latency():
    runs = [_quick("slower", 0.90, 12.0), _quick("faster", 0.90, 6.0)]
    assert recommendation(runs).startswith("Choose faster: 90.0% accuracy at 6.0 ms per image, the most accurate")


def test_no_successful_run():
    assert recommendation([_run("a", "classic", error="boom")]) == "No run finished: see the errors above."
    assert recommendation([]) == "No run finished: see the errors above."


def test_probe_gap_warning_only_beyond_ten_points():
    warned = recommendation([_quick("best", 0.88, 5.0, probe=0.60)])
    assert warned.endswith(
        ", but on your own probe images it reaches only 60.0% (-28.0 points), "
        "so the training images may not look like yours."
    )
    assert "probe" not in recommendation([_quick("best", 0.88, 5.0, probe=0.83)])


def test_recommendation_rejects_a_record_without_accuracy():
    with pytest.raises(ClassifrError, match=r"'x'.*accuracy.*None"):
        recommendation([_run("x", "classic")])
