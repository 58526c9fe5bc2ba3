"""Compare backbones, training strategies, classic baselines and hyperparameters on one dataset.

    classifr benchmark --quick --dataset ../shared/datasets/clothing-small   # under 10 minutes on 2 CPU cores
    classifr benchmark --preset full --dataset owner/name                    # the whole grid, meant for a GPU
    classifr benchmark --quick --probe ~/my-photos                            # + accuracy on your own photos

The run: import the dataset once (fixed hash split, seeded per-class caps) -> for each backbone,
embed the images once and train the head, the classic estimators on its embeddings and the full
fine-tunes -> classic estimators on raw pixels -> small CNNs from scratch -> evaluate every run on
the same eval images with `evaluate` -> time every run's inference in the same rounds -> score the
probe folder -> write the report folder (Markdown table, plots, confusion analysis, recommendation).
Every run is logged to the experiment tracker as "benchmark <name>". A run that fails is reported
with its error and the study goes on.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from classifr.inference.backbones import OFFLINE_BACKBONES, load_backbone
from classifr.core.config import Settings
from classifr.core.errors import ClassifrError
from classifr.inference.classifier import configure_runtime
from study.data import BenchmarkData, ProbeImages, load_benchmark_data, load_probe
from study.report import write_report
from study.candidates import (
    Candidate, Embeddings, TrainedRun, decode, embeddings, run_classic_on_embeddings, run_classic_on_pixels, run_full,
    run_head, run_scratch,
)
from study.timing import measure_latency
from training.metrics import classification_metrics
from training.tracking import RunTracker, tracking_folder

logger = logging.getLogger(__name__)

CLASSIC_KINDS = ("svm", "random forest", "dense")
LATENCY_IMAGES = 32
# Decoded once for latency and the probe at a size that covers every backbone's input (Lite2: 260 px).
DECODE_MIN_SIDE = 320


@dataclass(frozen=True)
class Preset:
    """The grid: data caps, backbones, and the settings of each strategy's runs."""

    name: str
    import_limit: int | None  # images imported from a big source (a fixed sample)
    max_train_per_class: int | None
    max_eval_per_class: int | None
    backbones: tuple[str, ...]
    fine_tunes: tuple[dict[str, Any], ...]  # FullConfig settings (+ max_train_images), for every backbone in `fine_tune_backbones`
    fine_tune_backbones: tuple[str, ...]
    scratch: tuple[dict[str, Any], ...]  # ScratchConfig settings
    classic_on_pixels: tuple[str, ...]
    classic_on_embeddings: tuple[str, ...]  # on the first backbone's embeddings


QUICK = Preset(
    name="quick",
    import_limit=3000,
    max_train_per_class=80,
    max_eval_per_class=40,
    backbones=("lite0", "lite1", "lite2"),
    # One short epoch on CPU: enough to measure what full fine-tuning costs here, not to converge.
    fine_tunes=({"epochs": 1, "learning_rate": 3e-4, "batch_size": 32, "augment": True, "max_train_images": 320,
                 "num_workers": 0},),
    fine_tune_backbones=("lite0",),
    # Learning rate and augmentation; epochs and batch size vary in the full preset (each CNN
    # epoch on 800 photos at 64 px takes about 6 s here, and the whole preset must stay under 10 minutes).
    scratch=(
        {"epochs": 6, "learning_rate": 3e-3, "batch_size": 32, "augment": True},
        {"epochs": 6, "learning_rate": 3e-3, "batch_size": 32, "augment": False},
        {"epochs": 6, "learning_rate": 1e-3, "batch_size": 32, "augment": True},
    ),
    classic_on_pixels=CLASSIC_KINDS,
    classic_on_embeddings=CLASSIC_KINDS,
)

FULL = Preset(
    name="full",
    import_limit=None,
    max_train_per_class=None,
    max_eval_per_class=None,
    backbones=("lite0", "lite1", "lite2"),
    fine_tunes=tuple(
        {"epochs": 10, "learning_rate": lr, "batch_size": batch, "augment": augment}
        for lr in (1e-4, 3e-4, 1e-3) for batch in (32, 64) for augment in (True, False)
    ),
    fine_tune_backbones=("lite0", "lite1", "lite2"),
    scratch=tuple(
        {"epochs": epochs, "learning_rate": lr, "batch_size": batch, "augment": augment}
        for epochs in (15, 30) for lr in (1e-3, 3e-3) for batch in (32, 128) for augment in (True, False)
    ),
    classic_on_pixels=CLASSIC_KINDS,
    classic_on_embeddings=CLASSIC_KINDS,
)

PRESETS = {preset.name: preset for preset in (QUICK, FULL)}


@dataclass(frozen=True)
class BenchmarkOptions:
    dataset: str | None = None  # None: the project dataset
    preset: str = "quick"
    backbones: tuple[str, ...] = ()  # replaces the preset's backbones (offline names, Hub ids, folders)
    only: tuple[str, ...] = ()  # keep candidates whose name contains one of these
    probe: Path | None = None
    out: Path | None = None
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ClassifrError(f"preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")


def candidates(preset: Preset, backbones: Sequence[str] = ()) -> list[Candidate]:
    """Every run of the grid, in the order they train (each backbone's embeddings are made once)."""
    backbones = tuple(backbones) or preset.backbones
    runs: list[Candidate] = []
    for backbone in backbones:
        short = _short(backbone)
        runs.append(Candidate(f"head {short}", "backbone", "head", "embeddings", backbone, {"l2": 3e-3}))
        if backbone == backbones[0]:
            runs += [Candidate(f"{kind} {short}", "classic", kind, "embeddings", backbone)
                     for kind in preset.classic_on_embeddings]
        if backbone in preset.fine_tune_backbones or (backbone not in OFFLINE_BACKBONES and preset.fine_tunes):
            runs += [Candidate(f"full {short} {_settings_name(s)}", "fine-tune", "full", "images", backbone, dict(s))
                     for s in preset.fine_tunes]
    runs += [Candidate(f"{kind} pixels", "classic", kind, "pixels") for kind in preset.classic_on_pixels]
    runs += [Candidate(f"cnn {_settings_name(s)}", "scratch", "scratch", "images", None, dict(s)) for s in preset.scratch]
    return runs


def _short(backbone: str) -> str:
    return backbone if backbone in OFFLINE_BACKBONES else backbone.rstrip("/").split("/")[-1]


def _settings_name(settings: dict[str, Any]) -> str:
    parts = [f"lr{settings['learning_rate']:g}", f"b{settings['batch_size']}", f"{settings['epochs']}ep",
             "aug" if settings.get("augment", True) else "noaug"]
    return " ".join(parts)


# --------------------------------------------------------------------------- the study


@dataclass
class _Study:
    settings: Settings
    options: BenchmarkOptions
    preset: Preset
    data: BenchmarkData
    probe: ProbeImages | None
    trained: dict[str, TrainedRun]
    records: dict[str, dict[str, Any]]


def run_benchmark(settings: Settings, options: BenchmarkOptions, *, preset: Preset | None = None) -> Path:
    """Run the grid and write the report folder; returns the path of its report.md.

    `preset` replaces the named preset of `options` (a custom grid, e.g. in tests)."""
    started, stamp = time.perf_counter(), datetime.now(timezone.utc)
    preset = preset or PRESETS[options.preset]
    grid = [c for c in candidates(preset, options.backbones) if not options.only or any(o in c.name for o in options.only)]
    if not grid:
        raise ClassifrError(f"no candidate name contains any of {list(options.only)}; "
                            f"names are like {[c.name for c in candidates(preset, options.backbones)][:6]}")
    data = load_benchmark_data(
        options.dataset, settings.cache_dir, settings.dataset_dir, seed=options.seed, import_limit=preset.import_limit,
        max_train_per_class=preset.max_train_per_class, max_eval_per_class=preset.max_eval_per_class,
        progress=options.progress,
    )
    probe = load_probe(options.probe, data.labels) if options.probe else None
    logger.info("benchmark %s on %s: %d runs", preset.name, data.source, len(grid))
    study = _Study(settings, options, preset, data, probe, {}, {})
    _train_all(study, grid)
    _time_and_probe(study)
    folder = options.out or settings.home / "benchmarks" / f"{stamp:%Y%m%d-%H%M%S}-{preset.name}"
    description = {**data.describe(), "preset": preset.name, "seed": options.seed, "machine": _machine(),
                   "started": stamp.isoformat(timespec="seconds"), "seconds": round(time.perf_counter() - started, 1),
                   "probe": None if probe is None else {"folder": str(probe.folder), "images": len(probe.paths),
                                                        "left_out": probe.unknown}}
    return write_report(Path(folder), description, [study.records[c.name] for c in grid])


def _train_all(study: _Study, grid: list[Candidate]) -> None:
    features: dict[str, Embeddings] = {}
    heads: dict[str, Any] = {}
    for candidate in tqdm(grid, desc="benchmark", unit="run", disable=not study.options.progress):
        with RunTracker.start(folder=tracking_folder(study.settings), run_name=f"benchmark {candidate.name}",
                              config={**candidate.describe(), "dataset": study.data.source,
                                      "preset": study.preset.name, "seed": study.options.seed}) as tracker:
            try:
                run = _train_one(study, candidate, features, heads, tracker)
            except Exception as err:  # noqa: BLE001 - one failed candidate must not end the study
                if isinstance(err, ClassifrError):  # a clear reason (a backbone that cannot load, bad data)
                    logger.warning("benchmark run %r failed: %s", candidate.name, err)
                else:
                    logger.exception("benchmark run %r failed", candidate.name)
                study.records[candidate.name] = {**candidate.describe(), "error": f"{type(err).__name__}: {err}"}
                tracker.log({"error": 1})
                continue
            study.trained[candidate.name] = run
            study.records[candidate.name] = _record(study, run)
            tracker.log(_tracked(study.records[candidate.name]))


def _train_one(study: _Study, candidate: Candidate, features: dict[str, Embeddings], heads: dict[str, Any],
               tracker: RunTracker) -> TrainedRun:
    torch.manual_seed(study.options.seed)
    on_epoch = _epoch_logger(tracker)
    if candidate.backbone is not None and candidate.backbone not in features:
        features[candidate.backbone] = _embed(study, candidate.backbone)
    if candidate.strategy == "head":
        run, heads[candidate.backbone] = run_head(candidate, study.data, features[candidate.backbone])
        return run
    if candidate.strategy == "full":
        if candidate.backbone not in heads:
            _, heads[candidate.backbone] = run_head(replace(candidate, name="head"), study.data, features[candidate.backbone])
        return run_full(candidate, study.data, features[candidate.backbone], heads[candidate.backbone],
                        progress=study.options.progress, on_epoch=on_epoch)
    if candidate.strategy == "scratch":
        return run_scratch(candidate, study.data, progress=study.options.progress, on_epoch=on_epoch)
    if candidate.features == "embeddings":
        return run_classic_on_embeddings(candidate, study.data, features[candidate.backbone], study.options.seed)
    return run_classic_on_pixels(candidate, study.data, study.options.seed)


def _embed(study: _Study, backbone: str) -> Embeddings:
    classifier = load_backbone(backbone, study.settings.cache_dir)
    total = len(study.data.train_paths) + len(study.data.eval_paths)
    with tqdm(total=total, desc=f"embedding {_short(backbone)}", unit="img", disable=not study.options.progress) as bar:
        return embeddings(classifier, study.data, bar.update)


def _epoch_logger(tracker: RunTracker) -> Callable[[dict], None]:
    return lambda record: tracker.log(record, step=int(record.get("epoch", 0)))


def _record(study: _Study, run: TrainedRun) -> dict[str, Any]:
    labels = list(study.data.labels)
    predicted = [labels[i] for i in run.eval_predictions]
    metrics = classification_metrics(study.data.eval_labels, predicted, labels=labels,
                                     cache_dir=study.settings.cache_dir / "evaluate")
    index = {label: i for i, label in enumerate(metrics.labels)}
    confusion = np.zeros((len(labels), len(labels)), int)  # on every label, in the study's order
    for true, guess in zip(study.data.eval_labels, predicted):
        confusion[labels.index(true), labels.index(guess)] += 1
    return {
        **run.candidate.describe(),
        "accuracy": metrics.accuracy,
        "macro_f1": metrics.macro_f1,
        "per_class_f1": {label: metrics.per_class[label]["f1"] if label in index else 0.0 for label in labels},
        "train_seconds": round(run.train_seconds, 2),
        "train_images_per_second": round(run.images_seen / run.train_seconds, 2) if run.train_seconds > 0 else None,
        "parameters": run.parameters,
        "checkpoint_bytes": run.checkpoint_bytes,
        "history": run.history,
        "confusion": confusion.tolist(),
        "error": None,
    }


def _tracked(record: dict[str, Any]) -> dict[str, Any]:
    keys = ("accuracy", "macro_f1", "per_class_f1", "train_seconds", "train_images_per_second", "parameters",
            "checkpoint_bytes")
    return {key: record[key] for key in keys if record.get(key) is not None}


def _time_and_probe(study: _Study) -> None:
    """Latency of every trained run in the same rounds, then their accuracy on the probe folder."""
    if not study.trained:
        return
    images = decode(study.data.eval_paths[:LATENCY_IMAGES], DECODE_MIN_SIDE)
    timings = measure_latency({name: run.predict for name, run in study.trained.items()}, images)
    for name, timing in timings.items():
        study.records[name]["latency_ms_batch1"] = timing["batch1_ms"]
        study.records[name]["latency_ms_batch32"] = timing["batch32_ms"]
    if study.probe is None:
        return
    probe_images = decode(study.probe.paths, DECODE_MIN_SIDE)
    labels = list(study.data.labels)
    for name, run in study.trained.items():
        predicted = np.concatenate([run.predict(probe_images[i : i + 32]) for i in range(0, len(probe_images), 32)])
        correct = sum(labels[p] == truth for p, truth in zip(predicted, study.probe.labels))
        study.records[name]["probe_accuracy"] = correct / len(probe_images)


def _machine() -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} CPU cores ({platform.machine()}), {torch.get_num_threads()} torch threads, {gpu}"


# --------------------------------------------------------------------------- command line


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="classifr benchmark", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", metavar="SOURCE",
                        help="imagefolder, Parquet files or Hub dataset id (default: the project dataset)")
    parser.add_argument("--quick", action="store_true", help="the CPU preset (same as --preset quick, the default)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="quick",
                        help="quick: capped data, short runs, under 10 minutes on CPU; full: the whole grid (GPU)")
    parser.add_argument("--backbone", action="append", default=[], metavar="NAME",
                        help=f"replace the preset's backbones: {', '.join(OFFLINE_BACKBONES)} (offline), or any "
                             "Transformers / timm Hub id or local checkpoint folder (repeatable)")
    parser.add_argument("--only", action="append", default=[], metavar="TEXT",
                        help="run only candidates whose name contains TEXT (repeatable), e.g. --only head --only svm")
    parser.add_argument("--probe", type=Path, metavar="DIR",
                        help="also score every run on your own labeled photos, DIR/<label>/<image>, and report the gap")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="report folder (default: CLASSIFR_HOME/benchmarks/<time>-<preset>, shown in the app)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--list", action="store_true", help="print the candidates of the preset and exit")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--json", action="store_true", help="print the runs as JSON instead of the summary table")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    preset = "quick" if args.quick else args.preset
    if args.list:
        for candidate in candidates(PRESETS[preset], args.backbone):
            print(candidate.name)
        return 0
    try:
        settings = Settings.from_env()
        configure_runtime(settings.num_threads)
        options = BenchmarkOptions(
            dataset=args.dataset, preset=preset, backbones=tuple(args.backbone), only=tuple(args.only),
            probe=args.probe, out=args.out, seed=args.seed, progress=not args.quiet,
        )
        report = run_benchmark(settings, options)
    except ClassifrError as err:
        print(f"classifr: error: {err}", file=sys.stderr)
        return 1
    if args.json:
        print((report.parent / "runs.json").read_text(encoding="utf-8"))
    else:
        print(_table_of(report))
        print(f"\nreport: {report}")
    return 0


def _table_of(report: Path) -> str:
    """The summary table and the recommendation, as report.md has them."""
    lines = report.read_text(encoding="utf-8").splitlines()
    table = [line for line in lines if line.startswith("|")]
    chosen = [line for line in lines if line.lower().startswith(("**recommendation", "recommendation"))]
    return "\n".join(table + [""] + chosen)


if __name__ == "__main__":
    sys.exit(main())
