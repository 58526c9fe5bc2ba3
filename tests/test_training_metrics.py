"""training.metrics: evaluate metrics from our local scripts, offline, cross-checked with scikit-learn.

Every test passes its own cache folder (or points HOME/HF_HOME at one), and a module fixture checks
that the real ~/.cache/huggingface is left exactly as it was.
"""

from __future__ import annotations

import json
import os
import pwd
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from classifr.core.errors import ClassifrError, LabelError
from tests.conftest import REPO_ROOT
from training.metrics import (
    METRIC_NAMES,
    MODULES_DIR,
    EvalResult,
    classification_metrics,
    compare_with_parent,
    load_metric,
    save_confusion_png,
)

REAL_HF_CACHE = Path(pwd.getpwuid(os.getuid()).pw_dir) / ".cache" / "huggingface"  # whatever HOME says

# A model knows z, e, d, c, b, a in this order. "z" never occurs, "e" is predicted but never true,
# "c" is never predicted; "b" and "a" tie on support (2 each) and still follow the model's order.
MODEL_LABELS = ["z", "e", "d", "c", "b", "a"]
REFS = ["a", "a", "b", "b", "c", "c", "d"]
PREDS = ["a", "b", "b", "b", "a", "e", "d"]


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_size) for p in root.rglob("*")}


@pytest.fixture(scope="module", autouse=True)
def real_hf_cache_untouched():
    before = _snapshot(REAL_HF_CACHE)
    yield
    assert _snapshot(REAL_HF_CACHE) == before, f"the tests wrote into {REAL_HF_CACHE}"


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("evaluate-cache")


@pytest.fixture(scope="module")
def small(cache: Path) -> EvalResult:
    return classification_metrics(REFS, PREDS, labels=MODEL_LABELS, cache_dir=cache)


def _assert_matches_sklearn(result: EvalResult, refs: list[str], preds: list[str]) -> None:
    labels = list(result.labels)
    precision, recall, f1, support = precision_recall_fscore_support(refs, preds, labels=labels, zero_division=0)
    assert result.accuracy == pytest.approx(accuracy_score(refs, preds))
    assert result.macro_f1 == pytest.approx(f1_score(refs, preds, average="macro", labels=labels, zero_division=0))
    assert result.confusion == confusion_matrix(refs, preds, labels=labels).tolist()
    for i, label in enumerate(labels):
        row = result.per_class[label]
        assert row["precision"] == pytest.approx(precision[i])
        assert row["recall"] == pytest.approx(recall[i])
        assert row["f1"] == pytest.approx(f1[i])
        assert row["support"] == support[i]


# --------------------------------------------------------------------------- classification_metrics


def test_small_case_by_hand(small: EvalResult):
    assert small.labels == ("e", "d", "c", "b", "a")  # model order, "z" dropped
    assert small.num_images == 7
    assert small.accuracy == pytest.approx(4 / 7)
    assert small.per_class == {
        "e": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0},  # predicted, never true
        "d": {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1},
        "c": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2},  # never predicted
        "b": {"precision": pytest.approx(2 / 3), "recall": 1.0, "f1": pytest.approx(0.8), "support": 2},
        "a": {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2},
    }
    assert small.macro_f1 == pytest.approx((0 + 1 + 0 + 0.8 + 0.5) / 5)
    assert small.confusion == [
        [0, 0, 0, 0, 0],
        [0, 1, 0, 0, 0],
        [1, 0, 0, 0, 1],
        [0, 0, 0, 2, 0],
        [0, 0, 0, 1, 1],
    ]


def test_small_case_matches_sklearn(small: EvalResult):
    _assert_matches_sklearn(small, REFS, PREDS)


def test_random_case_matches_sklearn(cache: Path):
    rng = random.Random(7)
    labels = [f"label-{i}" for i in range(10)]
    truths = labels[:8]  # label-8 and label-9 are never true
    refs = [rng.choice(truths) for _ in range(300)]
    # label-0 is never predicted; label-9 is predicted but never true
    wrong = [*truths[1:], "label-9"]
    preds = [r if r != "label-0" and rng.random() < 0.6 else rng.choice(wrong) for r in refs]
    result = classification_metrics(refs, preds, labels=labels, cache_dir=cache)
    assert result.labels == tuple(label for label in labels if label != "label-8")
    _assert_matches_sklearn(result, refs, preds)


def test_imagenet_sized_label_list_keeps_only_present_labels_in_model_order(cache: Path):
    labels = [f"c{i}" for i in range(1000)]
    refs = ["c999", "c5", "c500", "c42", "c7", "c5"]
    preds = ["c999", "c7", "c500", "c5", "c7", "c5"]
    result = classification_metrics(refs, preds, labels=labels, cache_dir=cache)
    assert result.labels == ("c5", "c7", "c42", "c500", "c999")
    assert np.asarray(result.confusion).shape == (5, 5)
    assert set(result.per_class) == set(result.labels)
    _assert_matches_sklearn(result, refs, preds)


# scikit-learn warns on every 1x1 confusion matrix; here 1x1 is right: only one label occurs.
@pytest.mark.filterwarnings("ignore:A single label was found:UserWarning")
def test_a_single_label_all_right(cache: Path):
    result = classification_metrics(["a", "a"], ["a", "a"], labels=["b", "a"], cache_dir=cache)
    assert result.labels == ("a",) and result.confusion == [[2]]
    assert result.accuracy == result.macro_f1 == 1.0
    assert result.per_class == {"a": {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2}}


def test_true_label_unknown_to_the_model_counts_as_wrong(cache: Path):
    # The parent evaluated on data with a new category: allowed, listed after the model's labels.
    result = classification_metrics(["a", "hat", "hat"], ["a", "a", "b"], labels=["a", "b"], cache_dir=cache)
    assert result.labels == ("a", "b", "hat")
    assert result.accuracy == pytest.approx(1 / 3)
    assert result.per_class["hat"]["recall"] == 0.0 and result.per_class["hat"]["support"] == 2


def test_to_json_is_plain_json(small: EvalResult):
    data = json.loads(json.dumps(small.to_json()))
    assert data["accuracy"] == pytest.approx(4 / 7)
    assert data["labels"] == ["e", "d", "c", "b", "a"]
    assert data["per_class"]["b"]["support"] == 2
    assert data["confusion"][3] == [0, 0, 0, 2, 0]
    assert data["num_images"] == 7 and "macro_f1" in data


# --------------------------------------------------------------------------- bad input


def test_mismatched_lengths_name_both_lengths():
    with pytest.raises(ClassifrError, match="3 references, 2 predictions"):
        classification_metrics(["a", "b", "a"], ["a", "b"], labels=["a", "b"])


def test_empty_input_is_refused():
    with pytest.raises(ClassifrError, match="empty"):
        classification_metrics([], [], labels=["a"])


def test_prediction_outside_the_label_list_is_refused():
    with pytest.raises(LabelError, match="'q'"):
        classification_metrics(["a"], ["q"], labels=["a", "b"])


def test_duplicate_model_labels_are_refused():
    with pytest.raises(LabelError, match="duplicate"):
        classification_metrics(["a"], ["a"], labels=["a", "b", "a"])


def test_compare_mismatched_lengths_name_all_three():
    with pytest.raises(ClassifrError, match="2 references, 2 new_predictions, 1 parent_predictions"):
        compare_with_parent(["a", "b"], ["a", "b"], ["a"], parent_labels=["a", "b"])
    with pytest.raises(ClassifrError, match="empty"):
        compare_with_parent([], [], [], parent_labels=["a"])


def test_unknown_metric_name_is_refused(tmp_path: Path):
    with pytest.raises(ClassifrError, match="'bleu'"):
        load_metric("bleu", cache_dir=tmp_path)


# --------------------------------------------------------------------------- compare_with_parent


def test_compare_with_parent_by_hand(cache: Path):
    refs = ["a", "b", "c", "c", "a", "b"]
    parent = ["a", "a", "b", "b", "b", "b"]
    new = ["a", "c", "c", "b", "a", "b"]
    # changed: #1 a->c (old->new), #2 b->c (old->new), #4 b->a (old->old); 3 of 6 images.
    result = compare_with_parent(refs, new, parent, parent_labels=["a", "b"], cache_dir=cache)
    assert result.num_images == 6 and result.num_shared == 4  # true a or b: #0, #1, #4, #5
    assert result.churn == pytest.approx(3 / 6)
    assert result.churn_old_to_new == pytest.approx(2 / 6)
    assert result.churn_old_to_old == pytest.approx(1 / 6)
    assert result.shared_accuracy_new == pytest.approx(3 / 4)  # a, c(wrong), a, b
    assert result.shared_accuracy_parent == pytest.approx(2 / 4)  # a, a(wrong), b(wrong), b
    assert result.new_label_support == {"c": 2}
    assert result.new_label_recall == {"c": pytest.approx(1 / 2)}  # #2 right, #3 said b
    assert json.loads(json.dumps(result.to_json()))["churn_old_to_new"] == pytest.approx(2 / 6)


def test_compare_with_no_image_of_an_old_label(cache: Path):
    result = compare_with_parent(["c", "d"], ["c", "c"], ["a", "a"], parent_labels=["a", "b"], cache_dir=cache)
    assert result.shared_accuracy_new is None and result.shared_accuracy_parent is None
    assert result.num_shared == 0
    assert result.churn == 1.0 and result.churn_old_to_new == 1.0 and result.churn_old_to_old == 0.0
    assert result.new_label_recall == {"c": 1.0, "d": 0.0}
    assert result.new_label_support == {"c": 1, "d": 1}


def test_compare_refuses_parent_predictions_outside_parent_labels():
    with pytest.raises(LabelError, match="'c'"):
        compare_with_parent(["a"], ["a"], ["c"], parent_labels=["a", "b"])


# --------------------------------------------------------------------------- confusion PNG


def _result_with(num_labels: int, cache: Path) -> EvalResult:
    labels = [f"category {i}" for i in range(num_labels)]
    refs = labels * 3
    preds = labels[1:] + labels[:1] + labels * 2
    return classification_metrics(refs, preds, labels=labels, cache_dir=cache)


@pytest.mark.slow  # over 0.25 s: outside the edit loop's fast subset
def test_confusion_png_opens_and_grows_with_the_label_count(tmp_path: Path, cache: Path):
    import matplotlib.pyplot as plt
    from PIL import Image

    open_before = plt.get_fignums()
    sizes = []
    for num_labels in (3, 8, 30):
        path = save_confusion_png(
            _result_with(num_labels, cache), tmp_path / "plots" / f"cm-{num_labels}.png", title=f"{num_labels} labels"
        )
        assert path.is_file()
        with Image.open(path) as image:
            assert image.format == "PNG"
            sizes.append(image.size)
    assert sizes[0][0] < sizes[1][0] < sizes[2][0] and sizes[0][1] < sizes[1][1] < sizes[2][1]
    assert plt.get_fignums() == open_before == []


# --------------------------------------------------------------------------- where evaluate writes


def _copied_scripts(modules_dir: Path, name: str) -> list[Path]:
    return list(modules_dir.glob(f"classifr_evaluate_*/metrics/{name}/*/{name}.py"))


def test_explicit_cache_dir_holds_everything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))  # a default that leaked would land here
    cache_dir = tmp_path / "cache"
    classification_metrics(REFS, PREDS, labels=MODEL_LABELS, cache_dir=cache_dir)
    for name in METRIC_NAMES:
        assert _copied_scripts(cache_dir / "modules", name), name
    assert (cache_dir / "metrics" / "accuracy").is_dir()
    assert not (home / ".cache" / "huggingface").exists()


def test_default_cache_follows_the_environment_at_call_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for name in ("HF_HOME", "HF_MODULES_CACHE", "HF_METRICS_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    load_metric("accuracy")
    assert _copied_scripts(tmp_path / "home" / ".cache" / "huggingface" / "modules", "accuracy")

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    load_metric("recall").compute(references=[0, 1], predictions=[0, 0], average=None)
    assert _copied_scripts(tmp_path / "hf" / "modules", "recall")
    assert (tmp_path / "hf" / "metrics" / "recall").is_dir()


def test_two_cache_folders_in_one_process(tmp_path: Path):
    # evaluate's fixed package name would import from the first folder only and miss the second.
    for folder in ("first", "second"):
        metric = load_metric("precision", cache_dir=tmp_path / folder)
        assert metric.compute(references=[0, 1], predictions=[0, 1], average="macro") == {"precision": 1.0}
        assert _copied_scripts(tmp_path / folder / "modules", "precision")


@pytest.mark.slow
def test_scripts_load_with_plain_evaluate_load(tmp_path: Path):
    """The scripts are standard evaluate scripts: `evaluate.load(path)` in a fresh interpreter."""
    code = (
        "import sys, evaluate\n"
        "for name in sys.argv[1:]:\n"
        "    metric = evaluate.load(f'training/evaluate_modules/{name}', keep_in_memory=True)\n"
        "    kwargs = {} if name in ('accuracy', 'confusion_matrix') else {'average': 'macro'}\n"
        "    print(name, metric.compute(references=[0, 1, 2, 0], predictions=[0, 1, 1, 0], **kwargs))\n"
    )
    env = {**os.environ, "HOME": str(tmp_path / "home"), "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_MODULES_CACHE", None)
    env.pop("HF_METRICS_CACHE", None)
    out = subprocess.run(
        [sys.executable, "-c", code, *METRIC_NAMES], cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=True
    ).stdout
    assert "accuracy {'accuracy': 0.75}" in out
    assert "confusion_matrix {'confusion_matrix': array([[2, 0, 0]," in out
    for name in METRIC_NAMES:
        assert (tmp_path / "hf" / "modules" / "evaluate_modules" / "metrics" / name).is_dir()
        assert (MODULES_DIR / name / f"{name}.py").is_file()
