"""`classifr benchmark`: the grid, the fixed split, the probe, and a whole study end to end.

The end-to-end study runs on real clothing photos with a tiny random ViT as the "Hub" backbone
(loaded from a local folder, the same path a Hub id takes), so every family of candidates
trains for real in seconds; whether the numbers mean something is checked on the real default
backbone (EfficientNet-Lite0) in its own test.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from classifr.core.config import Settings
from classifr.core.errors import ClassifrError
from study.run import FULL, QUICK, BenchmarkOptions, Preset, candidates, run_benchmark
from study.data import load_benchmark_data, load_probe
from training.tracking import list_runs, tracking_folder

REPO_ROOT = Path(__file__).resolve().parents[1]
CLASSES = ("hat", "pants", "shoes")




def _imagefolder(clothing_dir: Path, folder: Path, classes=CLASSES, per_class: int = 30, split: str = "train") -> Path:
    """A small imagefolder of real photos in the temp dir (the shared data stays read-only)."""
    for label in classes:
        (folder / label).mkdir(parents=True)
        for photo in sorted((clothing_dir / split / label).glob("*.jpg"))[:per_class]:
            shutil.copy(photo, folder / label / photo.name)
    return folder


@pytest.fixture(scope="module")
def source(clothing_dir, tmp_path_factory) -> Path:
    return _imagefolder(clothing_dir, tmp_path_factory.mktemp("bench-source"))


def _settings(home: Path) -> Settings:
    return Settings.from_env({"CLASSIFR_HOME": str(home)})


# --------------------------------------------------------------------------- the grid


def test_quick_grid_covers_every_family_with_unique_names():
    grid = candidates(QUICK)
    names = [c.name for c in grid]
    assert len(names) == len(set(names))
    assert {c.family for c in grid} == {"backbone", "fine-tune", "scratch", "classic"}
    assert [c.name for c in grid if c.strategy == "head"] == ["head lite0", "head lite1", "head lite2"]
    assert {c.name for c in grid if c.family == "classic"} == {
        "svm lite0", "random forest lite0", "dense lite0", "svm pixels", "random forest pixels", "dense pixels"}
    scratch = [c for c in grid if c.family == "scratch"]
    assert {c.hyperparameters["augment"] for c in scratch} == {True, False}  # augmentation on and off
    assert len({c.hyperparameters["learning_rate"] for c in scratch}) == 2
    # The full preset sweeps learning rate, batch size and augmentation of every backbone's fine-tune.
    full = [c for c in candidates(FULL) if c.family == "fine-tune"]
    assert {c.backbone for c in full} == {"lite0", "lite1", "lite2"}
    assert {(c.hyperparameters["learning_rate"], c.hyperparameters["batch_size"], c.hyperparameters["augment"])
            for c in full if c.backbone == "lite1"} == {(lr, b, a) for lr in (1e-4, 3e-4, 1e-3) for b in (32, 64)
                                                        for a in (True, False)}


def test_a_hub_backbone_replaces_the_preset_backbones_and_gets_fine_tuned():
    grid = candidates(QUICK, ["google/vit-base-patch16-224"])
    assert [c.name for c in grid if c.family in ("backbone", "fine-tune")] == [
        "head vit-base-patch16-224", "full vit-base-patch16-224 lr0.0003 b32 1ep aug"]
    assert all(c.backbone == "google/vit-base-patch16-224" for c in grid if c.features == "embeddings")


def test_unknown_preset_is_refused():
    with pytest.raises(ClassifrError, match="'huge'"):
        BenchmarkOptions(preset="huge")


# --------------------------------------------------------------------------- the data


@pytest.mark.slow  # over 0.25 s: outside the edit loop's fast subset
def test_split_is_fixed_and_caps_are_seeded(source, tmp_path):
    load = lambda seed: load_benchmark_data(str(source), tmp_path / "cache", tmp_path / "dataset", seed=seed,
                                            max_train_per_class=10, max_eval_per_class=3)
    first, again, other = load(0), load(0), load(1)
    assert first.labels == CLASSES
    assert first == again  # same seed, same images in the same order
    assert Counter(first.train_labels) == {label: 10 for label in CLASSES}
    assert all(n <= 3 for n in Counter(first.eval_labels).values()) and first.eval_paths
    assert not set(first.train_paths) & set(first.eval_paths)
    assert set(first.eval_paths) <= set(other.eval_paths) | set(first.eval_paths)  # hash split: eval pool is fixed
    assert set(first.train_paths) != set(other.train_paths)  # another seed keeps other train images
    # Imported once: the second load reads the cached copy (same folder, nothing re-imported).
    assert len(list((tmp_path / "cache" / "benchmark-data").iterdir())) == 1


def test_one_label_is_not_a_benchmark(clothing_dir, tmp_path):
    single = _imagefolder(clothing_dir, tmp_path / "single", classes=("hat",), per_class=8)
    _imagefolder(clothing_dir, single, classes=("pants",), per_class=1)  # one image: too few to learn
    with pytest.raises(ClassifrError, match="at least 2 labels"):
        load_benchmark_data(str(single), tmp_path / "cache", tmp_path / "dataset")


def test_missing_source_names_it(tmp_path):
    with pytest.raises(ClassifrError, match="no-such-folder"):
        load_benchmark_data(str(tmp_path / "no-such-folder"), tmp_path / "cache", tmp_path / "dataset")


def test_probe_matches_labels_ignoring_case_and_counts_the_rest(clothing_dir, tmp_path):
    probe = _imagefolder(clothing_dir, tmp_path / "probe", classes=("hat", "dress"), per_class=3, split="test")
    (probe / "hat").rename(probe / "HAT")
    found = load_probe(probe, CLASSES)
    assert found.labels == ("hat",) * 3 and len(found.paths) == 3
    assert found.unknown == {"dress": 3}
    with pytest.raises(ClassifrError, match="no image under a label folder"):
        load_probe(probe, ("pants",))
    with pytest.raises(ClassifrError, match="does not exist"):
        load_probe(tmp_path / "nowhere", CLASSES)


# --------------------------------------------------------------------------- a whole study


def _tiny_preset(tiny_vit_dir: Path) -> Preset:
    return Preset(
        name="test", import_limit=None, max_train_per_class=16, max_eval_per_class=8,
        backbones=(str(tiny_vit_dir), str(tiny_vit_dir.parent / "missing-backbone")),
        fine_tunes=({"epochs": 1, "learning_rate": 1e-3, "batch_size": 8, "augment": True, "max_train_images": 16,
                     "num_workers": 0},),
        fine_tune_backbones=(),
        scratch=({"epochs": 2, "learning_rate": 3e-3, "batch_size": 16, "augment": True, "size": 32},),
        classic_on_pixels=("svm", "random forest", "dense"),
        classic_on_embeddings=("svm",),
    )


@pytest.fixture(scope="module")
def study(source, tiny_vit_dir, clothing_dir, tmp_path_factory):
    home = tmp_path_factory.mktemp("bench-home")
    probe = _imagefolder(clothing_dir, tmp_path_factory.mktemp("bench-probe") / "mine", per_class=4, split="validation")
    options = BenchmarkOptions(dataset=str(source), probe=probe, seed=0, progress=False)
    report = run_benchmark(_settings(home), options, preset=_tiny_preset(tiny_vit_dir))
    return home, report, json.loads((report.parent / "runs.json").read_text())


@pytest.mark.slow  # over 0.25 s: outside the edit loop's fast subset
def test_study_trains_every_family_and_records_every_measurement(study, tiny_vit_dir):
    _, report, runs = study
    by_name = {run["name"]: run for run in runs}
    tiny = tiny_vit_dir.name
    assert set(by_name) == {f"head {tiny}", f"svm {tiny}", f"full {tiny} lr0.001 b8 1ep aug", "head missing-backbone",
                            "full missing-backbone lr0.001 b8 1ep aug", "svm pixels", "random forest pixels",
                            "dense pixels", "cnn lr0.003 b16 2ep aug"}
    finished = [run for run in runs if not run.get("error")]
    assert len(finished) == 7
    evaluated = json.loads((report.parent / "study.json").read_text())["eval_images"]
    assert 0 < evaluated <= 3 * 8
    for run in finished:
        assert 0 <= run["accuracy"] <= 1 and 0 <= run["macro_f1"] <= 1, run["name"]
        assert set(run["per_class_f1"]) == set(CLASSES)
        assert run["train_seconds"] > 0 and run["train_images_per_second"] > 0
        assert run["latency_ms_batch1"] > 0 and run["latency_ms_batch32"] > 0
        assert run["parameters"] > 0 and run["checkpoint_bytes"] > 0
        assert sum(map(sum, run["confusion"])) == evaluated  # every eval image once, on every label
        assert 0 <= run["probe_accuracy"] <= 1
    # Raw pixels beat chance (1/3) on real hat/pants/shoes photos (seeded: the same number every run).
    assert by_name["random forest pixels"]["accuracy"] > 0.4
    # Learning curves: one row per epoch for the CNN and the fine-tune, the dense network's per iteration.
    assert len(by_name["cnn lr0.003 b16 2ep aug"]["history"]) == 2
    assert len(by_name[f"full {tiny} lr0.001 b8 1ep aug"]["history"]) == 1
    assert by_name["dense pixels"]["history"]
    # A backbone that cannot load is an error row, not a crash, and the rest of the study ran.
    assert "missing-backbone" in by_name["head missing-backbone"]["error"]


@pytest.mark.slow  # the real default model
def test_study_writes_the_report_folder(study):
    _, report, runs = study
    folder = report.parent
    for name in ("report.md", "runs.json", "runs.csv", "study.json", "accuracy_vs_train_time.png",
                 "accuracy_vs_latency.png", "learning_curves.png", "per_class_f1.png", "confusion_best.png"):
        assert (folder / name).is_file(), name
    text = report.read_text()
    assert all(run["name"] in text for run in runs)
    assert "recommend" in text.lower() or "choose" in text.lower()
    study_json = json.loads((folder / "study.json").read_text())
    assert study_json["probe"]["images"] == 12 and study_json["preset"] == "test"
    assert folder.parent.name == "benchmarks"  # where the app looks


@pytest.mark.slow  # the real default model
def test_every_run_is_in_the_tracker(study, tiny_vit_dir):
    home, _, runs = study
    tracked = {run["name"]: run for run in list_runs(tracking_folder(_settings(home)))}
    head = tracked[f"benchmark head {tiny_vit_dir.name}"]
    assert head["metrics"]["accuracy"] == pytest.approx(next(r for r in runs if r["name"].startswith("head "))["accuracy"])
    assert {f"benchmark {run['name']}" for run in runs} <= set(tracked)


@pytest.mark.slow
def test_default_backbone_head_learns_real_photos(source, tmp_path):
    """The real Lite0 embeddings separate hats, pants and shoes almost perfectly; pixels do far worse."""
    preset = Preset(name="lite0", import_limit=None, max_train_per_class=20, max_eval_per_class=None,
                    backbones=("lite0",), fine_tunes=(), fine_tune_backbones=(), scratch=(),
                    classic_on_pixels=("svm",), classic_on_embeddings=())
    report = run_benchmark(_settings(tmp_path), BenchmarkOptions(dataset=str(source), progress=False), preset=preset)
    runs = {run["name"]: run for run in json.loads((report.parent / "runs.json").read_text())}
    assert runs["head lite0"]["accuracy"] >= 0.9
    assert runs["head lite0"]["parameters"] == 3_374_851  # Lite0 without the ImageNet head, plus 3 rows
    assert runs["head lite0"]["accuracy"] > runs["svm pixels"]["accuracy"]
    assert "head lite0" in report.read_text().split("ecommend")[-1][:400]


# --------------------------------------------------------------------------- command line


def _cli(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "CLASSIFR_HOME": str(home), "HF_HUB_OFFLINE": "1", "HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "classifr", "benchmark", *args], capture_output=True, text=True,
                          cwd=REPO_ROOT, env=env, timeout=120)


@pytest.mark.slow
def test_cli_lists_the_quick_grid(tmp_path):
    done = _cli("--quick", "--list", home=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [c.name for c in candidates(QUICK)]


def test_cli_names_a_missing_dataset_and_an_unmatched_only(tmp_path, source, monkeypatch, capsys):
    """The same main() `classifr benchmark` runs (in process: a subprocess would only add imports)."""
    from study.run import main

    monkeypatch.setenv("CLASSIFR_HOME", str(tmp_path))
    assert main(["--quick", "--quiet", "--dataset", str(tmp_path / "nowhere")]) == 1
    assert "nowhere" in capsys.readouterr().err
    assert main(["--quick", "--quiet", "--dataset", str(source), "--only", "no-such-run"]) == 1
    err = capsys.readouterr().err
    assert "no-such-run" in err and err.count("\n") == 1  # one line, before any data is imported
    assert not any((tmp_path / "cache" / "benchmark-data").iterdir())  # a failed import leaves nothing behind
