"""The report folder of `classifr benchmark`: tables, charts and a recommendation from run records.

The orchestrator trains and measures each candidate (frozen-backbone heads, fine-tuning, a CNN from
scratch, classic models on pixels or embeddings) and hands this module one `study` dict and one
record per run. `write_report` turns them into a folder a person can read (report.md with its PNGs)
and a program can read back (`load_report`: study.json and runs.json, for the app). A run whose
record has an `error` stays in the table with that error and is left out of every chart and of
"best".

Every file is written to a temporary file in the same folder and moved into place with
`os.replace`, so the app never reads half a file; report.md is written last.

Charts use a bare `matplotlib.figure.Figure` rendered by Agg, never pyplot (as
`training.metrics.save_confusion_png`): no global backend or figure registry is touched.

Public API: `write_report`, `load_report`, `confusion_analysis`, `recommendation`.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from classifr.core.errors import ClassifrError
from training.metrics import EvalResult, save_confusion_png

logger = logging.getLogger(__name__)

STUDY_JSON = "study.json"
RUNS_JSON = "runs.json"
RUNS_CSV = "runs.csv"
REPORT_MD = "report.md"
TRAIN_TIME_PNG = "accuracy_vs_train_time.png"
LATENCY_PNG = "accuracy_vs_latency.png"
LEARNING_CURVES_PNG = "learning_curves.png"
PER_CLASS_F1_PNG = "per_class_f1.png"
CONFUSION_PNG = "confusion_best.png"
CHART_FILES = (TRAIN_TIME_PNG, LATENCY_PNG, LEARNING_CURVES_PNG, PER_CLASS_F1_PNG, CONFUSION_PNG)
CHART_TITLES = {
    TRAIN_TIME_PNG: "Accuracy vs training time",
    LATENCY_PNG: "Accuracy vs latency",
    LEARNING_CURVES_PNG: "Learning curves",
    PER_CLASS_F1_PNG: "Per-class F1",
    CONFUSION_PNG: "Confusion matrix of the best run",
}

# Recommendation rules. A run within NEAR_BEST_POINTS accuracy points of the most accurate one is
# as good in practice (a 250-image evaluation set moves by 0.4 points per image), so among those the
# one fastest to serve is the pick.
NEAR_BEST_POINTS = 1.0
MUCH_FASTER_TRAINING = 2.0  # the pick's training is mentioned when it is at least this many times faster
PROBE_GAP_WARNING_POINTS = -10.0  # probe accuracy this far below eval accuracy: the data does not look like the user's

# Groups of similar classes: labels join when their average symmetric confusion rate is at least
# 1 - GROUP_DISTANCE (3%): rarer confusions are noise on a small evaluation set.
GROUP_DISTANCE = 0.97
CONFUSION_TOP_PAIRS = 5

CHART_DPI = 100
FIGURE_VALUES_MAX_LABELS = 20  # above this, numbers in heatmap cells are unreadable
LEARNING_CURVE_COLUMNS = 3
ERROR_CELL_CHARS = 100
FAMILY_COLOURS = {"backbone": "tab:blue", "fine-tune": "tab:orange", "scratch": "tab:green", "classic": "tab:purple"}
OTHER_FAMILY_COLOUR = "tab:gray"
MISSING = "–"

# Columns of runs.csv, in this order; other scalar keys of the records follow, sorted.
CSV_COLUMNS = (
    "name",
    "family",
    "backbone",
    "strategy",
    "features",
    "accuracy",
    "macro_f1",
    "train_seconds",
    "train_images_per_second",
    "latency_ms_batch1",
    "latency_ms_batch32",
    "parameters",
    "checkpoint_bytes",
    "probe_accuracy",
    "hyperparameters",
    "error",
)


# --------------------------------------------------------------------------- small helpers


def _number(value: Any) -> float | None:
    """`value` as a finite float, or None when missing, NaN, infinite or not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _succeeded(run: dict[str, Any]) -> bool:
    return not run.get("error")


def _successful(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Successful runs, most accurate first; ties: faster to serve, then by name (deterministic)."""

    def key(run: dict[str, Any]) -> tuple[float, float, str]:
        latency = _number(run.get("latency_ms_batch1"))
        return (-run["accuracy"], latency if latency is not None else math.inf, run["name"])

    return sorted((run for run in runs if _succeeded(run)), key=key)


def _latency(run: dict[str, Any]) -> float:
    latency = _number(run.get("latency_ms_batch1"))
    return latency if latency is not None else math.inf  # unmeasured never counts as fast


def _percent(fraction: float | None) -> str:
    return MISSING if fraction is None else f"{fraction * 100:.1f}"


def _milliseconds(value: float | None) -> str:
    if value is None:
        return MISSING
    return f"{value:.2f}" if value < 1 else f"{value:.1f}" if value < 100 else f"{value:,.0f}"


def _amount(value: float | None) -> str:
    """Seconds or images per second: one decimal below 10, else whole with thousands separators."""
    if value is None:
        return MISSING
    return f"{value:.1f}" if value < 10 else f"{value:,.0f}"


def _human_count(value: float | None) -> str:
    """4.7M, 31k, 812; the thresholds sit where rounding would print 1000k or 1000.0M."""
    if value is None:
        return MISSING
    if value >= 999_950_000:
        return f"{value / 1e9:.1f}B"
    if value >= 999_500:
        return f"{value / 1e6:.1f}M"
    if value >= 1_000:
        return f"{value / 1e3:.0f}k"
    return f"{value:.0f}"


def _megabytes(value: float | None) -> str:
    if value is None:
        return MISSING
    megabytes = value / 1e6  # decimal MB, as file managers show
    return f"{megabytes:.2f}" if megabytes < 1 else f"{megabytes:,.1f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def _cell(text: Any) -> str:
    # A pipe would end the Markdown cell and a newline the row.
    return " ".join(str(text).split()).replace("|", "\\|")


# --------------------------------------------------------------------------- input checks


def _check_labels(labels: Any, *, what: str) -> list[str]:
    if not isinstance(labels, (list, tuple)) or not labels:
        raise ClassifrError(f"{what} must be a non-empty list of label names, got {labels!r}")
    bad = [label for label in labels if not isinstance(label, str) or not label]
    if bad:
        raise ClassifrError(f"{what} must hold non-empty strings, got {bad[:5]!r}")
    duplicates = sorted(label for label, count in Counter(labels).items() if count > 1)
    if duplicates:
        raise ClassifrError(f"{what} has duplicate labels: {duplicates[:5]!r}")
    return list(labels)


def _confusion_array(labels: list[str], confusion: Any) -> np.ndarray:
    size = len(labels)
    if not isinstance(confusion, (list, tuple, np.ndarray)) or len(confusion) != size:
        rows = len(confusion) if isinstance(confusion, (list, tuple, np.ndarray)) else type(confusion).__name__
        raise ClassifrError(f"confusion must be {size}x{size} to match the {size} labels, got {rows} rows")
    for index, row in enumerate(confusion):
        if not isinstance(row, (list, tuple, np.ndarray)) or len(row) != size:
            width = len(row) if isinstance(row, (list, tuple, np.ndarray)) else type(row).__name__
            raise ClassifrError(
                f"confusion must be {size}x{size} to match the {size} labels, "
                f"but row {index} ({labels[index]!r}) has {width} columns"
            )
    try:
        matrix = np.asarray(confusion, dtype=float)
    except (TypeError, ValueError) as err:
        raise ClassifrError(f"confusion must hold image counts: {err}") from None
    bad = np.argwhere(~np.isfinite(matrix) | (matrix < 0))
    if len(bad):
        row, col = bad[0]
        value = float(matrix[row, col])
        raise ClassifrError(f"confusion must hold image counts, but confusion[{row}][{col}] is {value!r}")
    return matrix


def _check_study(study: Any) -> list[str]:
    if not isinstance(study, dict):
        raise ClassifrError(f"study must be a dict, got {type(study).__name__}")
    return _check_labels(study.get("labels"), what="study['labels']")


def _check_run(run: Any, index: int, labels: list[str] | None) -> None:
    """A readable error for a record `write_report` or `recommendation` cannot use; labels None: skip confusion."""
    if not isinstance(run, dict):
        raise ClassifrError(f"run {index} must be a dict, got {type(run).__name__}")
    name = run.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ClassifrError(f"run {index} needs a non-empty name, got {name!r}")
    error = run.get("error")
    if error is not None and not isinstance(error, str):
        raise ClassifrError(f"run {name!r}: error must be a string or None, got {error!r}")
    history = run.get("history") or []
    if not isinstance(history, list) or not all(isinstance(point, dict) for point in history):
        raise ClassifrError(f"run {name!r}: history must be a list of dicts, got {history!r:.80}")
    if not _succeeded(run):
        return  # a failed run may lack every measurement
    accuracy = _number(run.get("accuracy"))
    if accuracy is None or not 0 <= accuracy <= 1:
        raise ClassifrError(f"run {name!r}: accuracy must be a number from 0 to 1, got {run.get('accuracy')!r}")
    if labels is not None and run.get("confusion") is not None:
        try:
            _confusion_array(labels, run["confusion"])
        except ClassifrError as err:
            raise ClassifrError(f"run {name!r}: {err}") from None


def _check_runs(runs: Any, labels: list[str] | None) -> None:
    if not isinstance(runs, list):
        raise ClassifrError(f"runs must be a list of run records, got {type(runs).__name__}")
    for index, run in enumerate(runs):
        _check_run(run, index, labels)
    duplicates = sorted(name for name, count in Counter(run["name"] for run in runs).items() if count > 1)
    if duplicates:
        raise ClassifrError(f"run names must be unique, got duplicates {duplicates!r}")


# --------------------------------------------------------------------------- confusion analysis


def _row_rates(matrix: np.ndarray) -> np.ndarray:
    totals = matrix.sum(axis=1, keepdims=True)
    # A label with no evaluation images has an all-zero row: its rates are 0, not 0/0.
    return np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)


def _confused_pairs(labels: list[str], matrix: np.ndarray, rates: np.ndarray, top: int) -> list[dict[str, Any]]:
    cells = [
        (int(matrix[i, j]), float(rates[i, j]), i, j)
        for i in range(len(labels))
        for j in range(len(labels))
        if i != j and matrix[i, j] > 0
    ]
    # Most images first, then the larger share of the true class, then label order (deterministic).
    cells.sort(key=lambda cell: (-cell[0], -cell[1], cell[2], cell[3]))
    return [{"true": labels[i], "predicted": labels[j], "count": n, "rate": rate} for n, rate, i, j in cells[:top]]


def _similar_groups(labels: list[str], rates: np.ndarray) -> list[list[str]]:
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    # Similarity of two labels: how often each is taken for the other, averaged over both
    # directions (so the distance matrix is symmetric). Average linkage joins two clusters when
    # their labels are, on average, confused at least 1 - GROUP_DISTANCE of the time.
    similarity = (rates + rates.T) / 2
    distance = np.clip(1.0 - similarity, 0.0, 1.0)
    np.fill_diagonal(distance, 0.0)
    tree = linkage(squareform(distance, checks=False), "average")
    cluster_ids = fcluster(tree, t=GROUP_DISTANCE, criterion="distance")
    members: dict[int, list[int]] = {}
    for index, cluster in enumerate(cluster_ids):
        members.setdefault(int(cluster), []).append(index)
    groups = [sorted(indices) for indices in members.values() if len(indices) >= 2]
    groups.sort(key=lambda indices: (-len(indices), indices[0]))  # largest first, then label order
    return [[labels[i] for i in indices] for indices in groups]


def confusion_analysis(labels: list[str], confusion: list[list[int]], *, top: int = CONFUSION_TOP_PAIRS) -> dict:
    """The `top` most-confused (true → predicted) pairs and the groups of classes confused together.

    `confusion` has rows for true labels and columns for predicted ones, both in `labels` order.
    Returns {"pairs": [{"true", "predicted", "count", "rate"}, ...], "groups": [[label, ...], ...]};
    `rate` is the share of the true class's images; only groups of 2+ labels, largest first.
    """
    labels = _check_labels(labels, what="labels")
    if isinstance(top, bool) or not isinstance(top, int) or top < 0:
        raise ClassifrError(f"top must be a whole number of pairs (0 or more), got {top!r}")
    matrix = _confusion_array(labels, confusion)
    if len(labels) < 2:
        return {"pairs": [], "groups": []}  # nothing to confuse a single label with
    rates = _row_rates(matrix)
    return {"pairs": _confused_pairs(labels, matrix, rates, top), "groups": _similar_groups(labels, rates)}


# --------------------------------------------------------------------------- recommendation


def _speedup_clause(pick: dict[str, Any], best: dict[str, Any]) -> str:
    best_latency = _number(best.get("latency_ms_batch1"))
    if best_latency is None:
        return ""  # the pick is measured, the best is not: no ratio to claim
    return f" and {best_latency / _latency(pick):.1f}x faster to serve"


def _training_clause(pick: dict[str, Any], best: dict[str, Any]) -> str:
    pick_seconds, best_seconds = _number(pick.get("train_seconds")), _number(best.get("train_seconds"))
    if not pick_seconds or best_seconds is None or best_seconds / pick_seconds < MUCH_FASTER_TRAINING:
        return ""
    return (
        f"; it also trains {best_seconds / pick_seconds:.1f}x faster "
        f"({_duration(pick_seconds)} against {_duration(best_seconds)})"
    )


def _probe_clause(pick: dict[str, Any]) -> str:
    probe = _number(pick.get("probe_accuracy"))
    if probe is None:
        return ""
    gap = (probe - pick["accuracy"]) * 100
    if gap >= PROBE_GAP_WARNING_POINTS:
        return ""
    return (
        f", but on your own probe images it reaches only {probe * 100:.1f}% ({gap:+.1f} points), "
        "so the training images may not look like yours"
    )


def recommendation(runs: list[dict]) -> str:
    """One sentence naming the run to choose, by fixed rules on the numbers.

    The best run is the most accurate (ties: lower batch-1 latency). Among the runs within
    NEAR_BEST_POINTS of it, the fastest to serve at batch 1 is the pick.
    """
    _check_runs(runs, labels=None)
    ranked = _successful(runs)
    if not ranked:
        return "No run finished: see the errors above."
    best = ranked[0]
    near = [run for run in ranked if (best["accuracy"] - run["accuracy"]) * 100 <= NEAR_BEST_POINTS + 1e-9]
    # min() keeps the first of equal latencies, and `ranked` is most accurate first.
    pick = min(near, key=_latency)
    headline = f"Choose {pick['name']}: {pick['accuracy'] * 100:.1f}% accuracy"
    if _number(pick.get("latency_ms_batch1")) is not None:
        headline += f" at {_milliseconds(pick['latency_ms_batch1'])} ms per image"
    if pick is best and len(near) == 1:
        body = f", the most accurate run; no other run comes within {NEAR_BEST_POINTS:g} point of it"
    elif pick is best:
        body = f", the most accurate run and the fastest to serve of those within {NEAR_BEST_POINTS:g} point of it"
    else:
        body = (
            f", within {NEAR_BEST_POINTS:g} point of the most accurate run "
            f"({best['name']}, {best['accuracy'] * 100:.1f}%){_speedup_clause(pick, best)}"
            f"{_training_clause(pick, best)}"
        )
    return f"{headline}{body}{_probe_clause(pick)}."


# --------------------------------------------------------------------------- atomic files


def _replace_atomically(path: Path, write: Callable[[Path], None]) -> None:
    # The temporary file sits in the same folder, so os.replace is a rename on one file system:
    # a reader sees the old file or the new one, never a half-written one. The name is unique per
    # process and thread; unlike tempfile.mkstemp (mode 0600) it gets the usual permissions.
    partial = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.partial")
    try:
        write(partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _write_text(path: Path, text: str) -> None:
    _replace_atomically(path, lambda partial: partial.write_text(text, encoding="utf-8"))


def _json_safe(value: Any) -> Any:
    """`value` with NaN and infinities as None, numpy values as Python ones, tuples as lists."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _write_json(path: Path, data: Any) -> None:
    try:
        text = json.dumps(_json_safe(data), indent=2, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as err:
        raise ClassifrError(f"cannot store {path.name}: {err}") from None
    _write_text(path, text + "\n")


def _csv_value(value: Any) -> Any:
    value = _json_safe(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)  # hyperparameters: one readable cell
    return "" if value is None else value


def _csv_columns(runs: list[dict[str, Any]]) -> list[str]:
    scalar = (str, int, float, bool, type(None), np.generic)
    extras = {
        key
        for run in runs
        for key, value in run.items()
        if key not in CSV_COLUMNS and isinstance(value, scalar)
    }
    return list(CSV_COLUMNS) + sorted(extras)


def _write_csv(path: Path, runs: list[dict[str, Any]]) -> None:
    columns = _csv_columns(runs)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for run in runs:
        writer.writerow({column: _csv_value(run.get(column)) for column in columns})
    _write_text(path, buffer.getvalue())


# --------------------------------------------------------------------------- charts


def _save_figure(figure: Any, path: Path) -> None:
    _replace_atomically(path, lambda partial: figure.savefig(partial, format="png", dpi=CHART_DPI))


def _colour(family: Any) -> str:
    return FAMILY_COLOURS.get(family, OTHER_FAMILY_COLOUR)


def _scatter_png(path: Path, runs: list[dict[str, Any]], *, x_key: str, x_label: str, title: str) -> bool:
    """Accuracy against `x_key` on a log scale, one labelled point per run; False when nothing to draw."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    points = [(run, x) for run in runs if (x := _number(run.get(x_key))) is not None and x > 0]
    if not points:
        logger.info("no run has a positive %s: %s not drawn", x_key, path.name)
        return False
    figure = Figure(figsize=(8, 5.5), layout="constrained")
    try:
        ax = figure.add_subplot()
        families = sorted({str(run.get("family")) for run, _ in points}, key=lambda f: (f not in FAMILY_COLOURS, f))
        for family in families:
            xs = [x for run, x in points if str(run.get("family")) == family]
            ys = [run["accuracy"] * 100 for run, _ in points if str(run.get("family")) == family]
            ax.scatter(xs, ys, s=60, color=_colour(family), edgecolors="black", linewidths=0.5, label=family)
        for run, x in points:
            ax.annotate(run["name"], (x, run["accuracy"] * 100), xytext=(5, 4), textcoords="offset points", fontsize=8)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))  # 10, not 10^1
        ax.margins(x=0.12, y=0.08)  # room for the name beside the rightmost point
        ax.set_xlabel(x_label)
        ax.set_ylabel("Accuracy (%)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(title="family", fontsize=8)
        _save_figure(figure, path)
    finally:
        figure.clear()  # a pyplot-free Figure has nothing to close; free its artists now
    return True


def _history_series(run: dict[str, Any], key: str, scale: float = 1.0) -> tuple[list[float], list[float]]:
    """(epochs, values) of the epochs that have `key`: evaluation may run every few epochs only,
    and a diverged loss is NaN; skipping those keeps the line connected."""
    epochs, values = [], []
    for index, point in enumerate(run["history"]):
        value = _number(point.get(key))
        if value is not None:
            epoch = _number(point.get("epoch"))
            epochs.append(index + 1 if epoch is None else epoch)
            values.append(value * scale)
    return epochs, values


def _plot_history(ax: Any, run: dict[str, Any]) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.plot(*_history_series(run, "eval_accuracy", scale=100), marker="o", color="tab:blue")
    ax.set_ylabel("Eval accuracy (%)", color="tab:blue")
    ax.set_xlabel("Epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no epoch 1.5
    ax.set_title(run["name"], fontsize=10)
    ax.grid(True, alpha=0.3)
    loss_ax = ax.twinx()
    loss_ax.plot(*_history_series(run, "train_loss"), marker="s", color="tab:red")
    loss_ax.set_ylabel("Train loss", color="tab:red")


def _learning_curves_png(path: Path, runs: list[dict[str, Any]]) -> bool:
    """One subplot per run with a history; False (no file) when no run has one."""
    from matplotlib.figure import Figure

    with_history = [run for run in runs if run.get("history")]
    if not with_history:
        return False
    columns = min(LEARNING_CURVE_COLUMNS, len(with_history))
    rows = math.ceil(len(with_history) / columns)
    figure = Figure(figsize=(4.8 * columns, 3.6 * rows), layout="constrained")
    try:
        axes = figure.subplots(rows, columns, squeeze=False).ravel()
        for ax, run in zip(axes, with_history):
            _plot_history(ax, run)
        for ax in axes[len(with_history):]:
            ax.set_visible(False)  # empty cells of the last row
        figure.suptitle("Learning curves")
        _save_figure(figure, path)
    finally:
        figure.clear()
    return True


def _f1_matrix(runs: list[dict[str, Any]], labels: list[str]) -> np.ndarray:
    def value(run: dict[str, Any], label: str) -> float:
        scores = run.get("per_class_f1") or {}
        number = _number(scores.get(label)) if isinstance(scores, dict) else None
        return math.nan if number is None else number

    return np.array([[value(run, label) for label in labels] for run in runs], dtype=float)


def _per_class_f1_png(path: Path, runs: list[dict[str, Any]], labels: list[str]) -> bool:
    """Heatmap of F1 per run (rows, most accurate first) and label; False when no run has per-class F1."""
    from matplotlib.figure import Figure

    runs = [run for run in runs if run.get("per_class_f1")]
    if not runs:
        return False
    matrix = _f1_matrix(runs, labels)
    # About half an inch per label and a third per run, clamped so 200 labels stay a picture.
    width = min(max(3.0 + 0.55 * len(labels), 7.0), 30.0)
    height = min(max(2.0 + 0.4 * len(runs), 4.0), 20.0)
    figure = Figure(figsize=(width, height), layout="constrained")
    try:
        ax = figure.add_subplot()
        image = ax.imshow(matrix, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
        figure.colorbar(image, ax=ax, label="F1")
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", rotation_mode="anchor", fontsize=8)
        ax.set_yticks(range(len(runs)), [run["name"] for run in runs], fontsize=8)
        ax.set_title("Per-class F1")
        if len(labels) <= FIGURE_VALUES_MAX_LABELS:
            for (row, col), score in np.ndenumerate(matrix):
                if math.isfinite(score):
                    colour = "black" if score > 0.6 else "white"  # viridis is dark at the low end
                    ax.text(col, row, f"{score:.2f}", ha="center", va="center", color=colour, fontsize=7)
        _save_figure(figure, path)
    finally:
        figure.clear()
    return True


def _confusion_png(path: Path, best: dict[str, Any], labels: list[str]) -> bool:
    if best.get("confusion") is None:
        return False
    matrix = _confusion_array(labels, best["confusion"]).astype(int)
    result = EvalResult(
        accuracy=best["accuracy"],
        macro_f1=_number(best.get("macro_f1")) or 0.0,
        per_class={},  # save_confusion_png draws only the matrix
        confusion=matrix.tolist(),
        labels=tuple(labels),
        num_images=int(matrix.sum()),
    )
    title = f"{best['name']}: {best['accuracy'] * 100:.1f}% accuracy"
    _replace_atomically(path, lambda partial: save_confusion_png(result, partial, title=title))
    return True


def _write_charts(folder: Path, ranked: list[dict[str, Any]], labels: list[str]) -> list[str]:
    """Draw every chart that has data; remove those that have none (left from an earlier report)."""
    drawn: dict[str, bool] = dict.fromkeys(CHART_FILES, False)
    if ranked:
        drawn[TRAIN_TIME_PNG] = _scatter_png(
            folder / TRAIN_TIME_PNG,
            ranked,
            x_key="train_seconds",
            x_label="Training time (s, log scale)",
            title="Accuracy vs training time",
        )
        drawn[LATENCY_PNG] = _scatter_png(
            folder / LATENCY_PNG,
            ranked,
            x_key="latency_ms_batch1",
            x_label="Latency at batch 1 (ms per image, log scale)",
            title="Accuracy vs latency",
        )
        drawn[LEARNING_CURVES_PNG] = _learning_curves_png(folder / LEARNING_CURVES_PNG, ranked)
        drawn[PER_CLASS_F1_PNG] = _per_class_f1_png(folder / PER_CLASS_F1_PNG, ranked, labels)
        drawn[CONFUSION_PNG] = _confusion_png(folder / CONFUSION_PNG, ranked[0], labels)
    for name, was_drawn in drawn.items():
        if not was_drawn:
            (folder / name).unlink(missing_ok=True)  # report.md must not show a stale picture
    return [name for name, was_drawn in drawn.items() if was_drawn]


# --------------------------------------------------------------------------- report.md


def _has_probe(runs: list[dict[str, Any]]) -> bool:
    return any(_number(run.get("probe_accuracy")) is not None for run in runs if _succeeded(run))


def _table_header(probe: bool) -> list[str]:
    header = [
        "run", "family", "accuracy %", "macro F1 %", "train s", "train img/s",
        "latency b1 ms", "latency b32 ms/img", "parameters", "checkpoint MB",
    ]
    return header + (["probe %", "gap points"] if probe else [])


def _success_row(run: dict[str, Any], probe: bool) -> list[str]:
    row = [
        run["name"],
        run.get("family") or MISSING,
        _percent(run["accuracy"]),
        _percent(_number(run.get("macro_f1"))),
        _amount(_number(run.get("train_seconds"))),
        _amount(_number(run.get("train_images_per_second"))),
        _milliseconds(_number(run.get("latency_ms_batch1"))),
        _milliseconds(_number(run.get("latency_ms_batch32"))),
        _human_count(_number(run.get("parameters"))),
        _megabytes(_number(run.get("checkpoint_bytes"))),
    ]
    if probe:
        probe_accuracy = _number(run.get("probe_accuracy"))
        gap = None if probe_accuracy is None else (probe_accuracy - run["accuracy"]) * 100
        row += [_percent(probe_accuracy), MISSING if gap is None else f"{gap:+.1f}"]
    return row


def _failure_row(run: dict[str, Any], columns: int) -> list[str]:
    error = str(run["error"]).strip().splitlines()[0] if str(run["error"]).strip() else "error"
    if len(error) > ERROR_CELL_CHARS:
        error = error[: ERROR_CELL_CHARS - 1] + "…"
    row = [run["name"], run.get("family") or MISSING, f"failed: {error}"]
    return row + [MISSING] * (columns - len(row))


def _summary_table(runs: list[dict[str, Any]]) -> str:
    """The Markdown table: successful runs most accurate first, failed runs last (input order)."""
    probe = _has_probe(runs)
    header = _table_header(probe)
    rows = [_success_row(run, probe) for run in _successful(runs)]
    rows += [_failure_row(run, len(header)) for run in runs if not _succeeded(run)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|"]
    lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def _count(value: Any) -> str:
    number = _number(value)
    return "?" if number is None else f"{number:,.0f}"


def _study_lines(study: dict[str, Any], labels: list[str]) -> list[str]:
    line = (
        f"Dataset **{study.get('dataset', '?')}**, preset {study.get('preset', '?')}: {len(labels)} labels, "
        f"{_count(study.get('train_images'))} training and {_count(study.get('eval_images'))} evaluation images, "
        f"seed {study.get('seed', '?')}; {study.get('machine') or 'unknown machine'}; "
        f"wall time {_duration(_number(study.get('seconds')))}"
    )
    if study.get("started"):
        line += f", started {study['started']}"
    lines = [line + "."]
    probe = study.get("probe")
    if isinstance(probe, dict):
        lines += ["", f"Probe: {_count(probe.get('images'))} of your own images from `{probe.get('folder', '?')}`."]
    return lines


def _analysis_lines(best: dict[str, Any], labels: list[str]) -> list[str]:
    lines = [f"## Where the best run ({_cell(best['name'])}) goes wrong", ""]
    if best.get("confusion") is None:
        return lines + ["The run record has no confusion matrix."]
    analysis = confusion_analysis(labels, best["confusion"])
    if not analysis["pairs"]:
        return lines + ["It made no mistakes on the evaluation images."]
    lines.append("Most-confused pairs (true → predicted):")
    lines.append("")
    for pair in analysis["pairs"]:
        lines.append(
            f"- **{pair['true']} → {pair['predicted']}**: {pair['count']} images "
            f"({pair['rate'] * 100:.0f}% of {pair['true']})"
        )
    lines.append("")
    threshold = f"{(1 - GROUP_DISTANCE) * 100:.0f}%"
    if analysis["groups"]:
        groups = "; ".join(", ".join(group) for group in analysis["groups"])
        lines.append(f"Groups of similar classes (taken for each other at least ~{threshold} of the time): {groups}.")
    else:
        lines.append(f"No classes are taken for each other often enough (~{threshold}) to form a group.")
    return lines


def _report_markdown(study: dict[str, Any], runs: list[dict[str, Any]], labels: list[str], charts: list[str]) -> str:
    ranked = _successful(runs)
    lines = [f"# Benchmark: {study.get('dataset', '?')}", ""]
    lines += _study_lines(study, labels) + [""]
    lines += [_summary_table(runs), ""]
    lines += [f"**Recommendation:** {recommendation(runs)}", ""]
    if charts:
        lines += ["## Charts", ""]
        lines += [f"![{CHART_TITLES[name]}]({name})\n" for name in charts]
    if ranked:
        lines += _analysis_lines(ranked[0], labels) + [""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- public entry points


def write_report(folder: Path, study: dict, runs: list[dict]) -> Path:
    """Write the benchmark report into `folder` (created if needed) and return its report.md path.

    Files: study.json, runs.json, runs.csv, the charts that have data, and report.md last.
    """
    labels = _check_study(study)
    _check_runs(runs, labels)
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ClassifrError(f"cannot create the report folder {folder}: {err}") from None
    _write_json(folder / STUDY_JSON, study)
    _write_json(folder / RUNS_JSON, runs)
    _write_csv(folder / RUNS_CSV, runs)
    charts = _write_charts(folder, _successful(runs), labels)
    report = folder / REPORT_MD
    _write_text(report, _report_markdown(study, runs, labels, charts))
    failed = sum(not _succeeded(run) for run in runs)
    logger.info("wrote benchmark report %s: %d runs (%d failed), %d charts", report, len(runs), failed, len(charts))
    return report


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ClassifrError(f"the benchmark report file {path} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ClassifrError(f"cannot read the benchmark report file {path}: {err}") from None


def load_report(folder: Path) -> tuple[dict, list[dict]]:
    """(study, runs) as `write_report` stored them in `folder`'s study.json and runs.json."""
    folder = Path(folder)
    study = _read_json(folder / STUDY_JSON)
    if not isinstance(study, dict):
        raise ClassifrError(f"the benchmark report file {folder / STUDY_JSON} must hold an object")
    runs = _read_json(folder / RUNS_JSON)
    if not isinstance(runs, list) or not all(isinstance(run, dict) for run in runs):
        raise ClassifrError(f"the benchmark report file {folder / RUNS_JSON} must hold a list of run objects")
    return study, runs
