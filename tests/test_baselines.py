"""The benchmark's non-backbone candidates (study/baselines.py) on real clothing photos.

A small subset keeps this file fast on a CPU: hat, shoes and pants (3 classes, chance = 1/3),
20 training photos each. The classic models are scored on the next 30 photos of each class
(held out from training): 90 photos make the accuracy steady enough to assert a margin over
chance. Measured on 120 held-out photos of these classes, every classic kind reaches 60-68%
across seeds; the tests ask for 50%. Photos are read from ../shared/datasets, never copied.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch

from classifr.core.errors import ClassifrError, ConfigError, InvalidImageError
from tests.conftest import CLOTHING
from study.baselines import (
    CLASSIC_KINDS,
    CNN_WIDTHS,
    SCRATCH_HISTORY_KEYS,
    ClassicResult,
    ScratchConfig,
    SmallCNN,
    checkpoint_bytes,
    fit_classic,
    parameter_count,
    pixel_features,
    predict_classic,
    predict_scratch,
    prepare_scratch_inputs,
    train_small_cnn,
)

CLASSES = ("hat", "shoes", "pants")
MIN_ACCURACY = 0.5  # chance is 1/3; measured 60-68% (see the module docstring)
# Small and quick for the CNN tests: learning is shown by the loss, not by accuracy.
FAST_CNN = dict(batch_size=8, size=32)




def _photos(split: str, count: int, offset: int = 0) -> tuple[list[Path], np.ndarray]:
    """`count` photos per class after `offset` (sorted by name), and their class ids."""
    paths = [
        path for name in CLASSES for path in sorted((CLOTHING / split / name).glob("*.jpg"))[offset : offset + count]
    ]
    return paths, np.repeat(np.arange(len(CLASSES)), count)


@pytest.fixture(scope="module")
def train_set() -> tuple[list[Path], np.ndarray]:
    return _photos("train", 20)


@pytest.fixture(scope="module")
def held_out() -> tuple[list[Path], np.ndarray]:
    return _photos("train", 30, offset=20)


@pytest.fixture(scope="module")
def pixels(train_set, held_out) -> dict[str, np.ndarray]:
    return {"train": pixel_features(train_set[0]), "eval": pixel_features(held_out[0])}


@pytest.fixture(scope="module")
def classic(pixels, train_set) -> dict[str, ClassicResult]:
    return {kind: fit_classic(kind, pixels["train"], train_set[1], seed=0) for kind in CLASSIC_KINDS}


# --- raw pixels ---------------------------------------------------------------------------------


def test_pixel_features_are_flat_unit_floats(pixels, train_set):
    features = pixels["train"]
    assert features.shape == (len(train_set[0]), 32 * 32 * 3)
    assert features.dtype == np.float32
    assert features.min() >= 0.0 and features.max() <= 1.0
    assert features.std() > 0.05  # real photos, not a constant fill
    small = pixel_features(train_set[0][:2], size=8)
    assert small.shape == (2, 8 * 8 * 3)


def test_pixel_features_keep_the_aspect_by_cropping(tmp_path):
    from PIL import Image

    # A wide image: red square in the middle, blue bands left and right. A centre crop sees only red.
    image = Image.new("RGB", (300, 100), (0, 0, 255))
    image.paste((255, 0, 0), (100, 0, 200, 100))
    image.save(tmp_path / "wide.png")
    pixels = pixel_features([tmp_path / "wide.png"], size=8).reshape(8, 8, 3)
    assert np.allclose(pixels[..., 0], 1.0) and np.allclose(pixels[..., 2], 0.0)


def test_pixel_features_take_pil_images_too(pixels, train_set):
    """Serving hands decoded PIL images: they must give (nearly) the pixels their files give."""
    from PIL import Image

    with Image.open(train_set[0][0]) as image:
        from_pil = pixel_features([image])
    # Not identical: a path is decoded in JPEG draft mode (at a reduced DCT scale), a PIL image in full.
    assert from_pil.shape == (1, 3072)
    assert np.abs(from_pil[0] - pixels["train"][0]).mean() < 0.05  # measured: at most 0.029 on this subset


def test_broken_image_names_the_file(tmp_path, train_set):
    garbage = tmp_path / "x.jpg"
    garbage.write_bytes(b"this is not a jpeg" * 10)
    with pytest.raises(InvalidImageError, match="x.jpg"):
        pixel_features([train_set[0][0], garbage])
    truncated = tmp_path / "half.jpg"
    data = train_set[0][0].read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidImageError, match="half.jpg"):
        pixel_features([truncated])


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_pixel_features_reject_bad_sizes(bad, train_set):
    with pytest.raises(ClassifrError, match=f"got {bad!r}"):
        pixel_features(train_set[0][:1], size=bad)


def test_pixel_features_reject_no_paths():
    with pytest.raises(ClassifrError, match="no images"):
        pixel_features([])


# --- classic models -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", CLASSIC_KINDS)
@pytest.mark.slow  # over 0.25 s: outside the edit loop's fast subset
def test_classic_models_beat_chance(kind, classic, pixels, held_out):
    predictions = predict_classic(classic[kind], pixels["eval"])
    assert predictions.shape == (len(held_out[1]),)
    assert set(predictions.tolist()) <= {0, 1, 2}
    accuracy = float((predictions == held_out[1]).mean())
    assert accuracy >= MIN_ACCURACY, f"{kind}: {accuracy:.3f}"


def test_dense_history_follows_the_loss_curve(classic):
    history = classic["dense"].history
    assert len(history) >= 2
    assert [row["epoch"] for row in history] == list(range(1, len(history) + 1))
    assert set(history[0]) == {"epoch", "train_loss", "eval_accuracy"}
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert all(0.0 <= row["eval_accuracy"] <= 1.0 for row in history)
    assert classic["svm"].history == [] and classic["random forest"].history == []


def test_unknown_kind_lists_the_kinds(pixels, train_set):
    with pytest.raises(ClassifrError, match="'knn'.*svm, random forest, dense"):
        fit_classic("knn", pixels["train"], train_set[1])


def test_one_class_is_refused(pixels):
    with pytest.raises(ClassifrError, match="at least 2 classes, got 1"):
        fit_classic("svm", pixels["train"][:20], np.zeros(20, dtype=int))


def test_mismatched_lengths_are_refused(pixels, train_set):
    with pytest.raises(ClassifrError, match="59 entries but there are 60 images"):
        fit_classic("svm", pixels["train"], train_set[1][:59])


def test_non_integer_targets_are_refused(pixels):
    with pytest.raises(ClassifrError, match="integer class ids, got dtype <U"):
        fit_classic("svm", pixels["train"][:2], np.array(["hat", "shoes"]))


def test_dense_needs_two_images_per_class(pixels):
    targets = np.array([0] * 10 + [1])
    with pytest.raises(ClassifrError, match=r"classes \[1\] have 1"):
        fit_classic("dense", pixels["train"][:11], targets)


def test_predict_classic_checks_the_width(classic, pixels):
    with pytest.raises(ClassifrError, match="768 values per image; the svm model expects 3072"):
        predict_classic(classic["svm"], pixels["eval"][:, :768])


# --- small CNN from scratch ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def cnn_eval() -> tuple[list[Path], np.ndarray]:
    return _photos("validation", 10)


@pytest.fixture(scope="module")
def scratch(train_set, cnn_eval):
    seen: list[dict] = []
    config = ScratchConfig(epochs=3, augment=True, **FAST_CNN)
    result = train_small_cnn(*train_set, *cnn_eval, len(CLASSES), config, progress=False, on_epoch=seen.append)
    return result, seen


@pytest.mark.slow  # over 0.25 s: outside the edit loop's fast subset
def test_small_cnn_trains(scratch):
    result, seen = scratch
    history = result.history
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert all(tuple(row) == SCRATCH_HISTORY_KEYS for row in history)
    assert seen == history  # on_epoch got every record as it was made
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert all(row["images_per_second"] > 0 and row["seconds"] > 0 for row in history)
    best = max(history, key=lambda row: row["eval_accuracy"])
    assert result.best_epoch == best["epoch"] and result.best_accuracy == best["eval_accuracy"]
    assert not result.model.training
    assert result.size == 32 and len(result.mean) == 3 and all(0 < s < 1 for s in result.std)
    assert result.train_seconds > 0 and result.images_per_second > 0


def test_small_cnn_keeps_the_best_epoch(scratch, cnn_eval):
    """The returned weights score the best epoch's accuracy on the evaluation photos."""
    result, _ = scratch
    predictions = predict_scratch(result, cnn_eval[0])
    assert set(predictions.tolist()) <= {0, 1, 2} and predictions.shape == (len(cnn_eval[1]),)
    assert float((predictions == cnn_eval[1]).mean()) == pytest.approx(result.best_accuracy)


def test_predict_scratch_on_tensors_matches_paths(scratch, cnn_eval):
    result, _ = scratch
    inputs = prepare_scratch_inputs(result, cnn_eval[0])
    assert inputs.dtype == torch.uint8 and inputs.shape == (len(cnn_eval[0]), 3, 32, 32)
    assert np.array_equal(predict_scratch(result, inputs, batch_size=7), predict_scratch(result, cnn_eval[0]))
    with pytest.raises(ClassifrError, match="uint8 tensor, got torch.float32"):
        predict_scratch(result, inputs.float())


def test_predict_scratch_on_pil_images(scratch, cnn_eval):
    from PIL import Image

    result, _ = scratch
    images = [Image.open(path) for path in cnn_eval[0][:4]]
    predictions = predict_scratch(result, images)
    assert predictions.shape == (4,) and set(predictions.tolist()) <= {0, 1, 2}


def _first_loss(train_set, cnn_eval, **overrides) -> float:
    config = ScratchConfig(**{"epochs": 1, **FAST_CNN, **overrides})
    result = train_small_cnn(*train_set, *cnn_eval, len(CLASSES), config, progress=False)
    return result.history[0]["train_loss"]


@pytest.mark.slow  # over 0.25 s: outside the edit loop's fast subset
def test_same_seed_same_loss(train_set, cnn_eval):
    first = _first_loss(train_set, cnn_eval, seed=3)
    assert _first_loss(train_set, cnn_eval, seed=3) == pytest.approx(first, rel=1e-5)
    assert abs(_first_loss(train_set, cnn_eval, seed=4) - first) > 1e-3


def test_small_cnn_without_augmentation(train_set, cnn_eval):
    config = ScratchConfig(epochs=1, augment=False, **FAST_CNN)
    result = train_small_cnn(*train_set, *cnn_eval, len(CLASSES), config, progress=True)
    assert len(result.history) == 1 and np.isfinite(result.history[0]["train_loss"])


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("epochs", 0), ("learning_rate", -1), ("size", 7),
        ("batch_size", 2.0), ("weight_decay", float("nan")), ("augment", 1),
    ],
)
def test_scratch_config_names_bad_values(field, bad):
    with pytest.raises(ConfigError, match=rf"ScratchConfig\.{field} must be .*, got {bad!r}"):
        ScratchConfig(**{field: bad})


def test_train_small_cnn_checks_targets(train_set, cnn_eval):
    paths, targets = train_set
    with pytest.raises(ClassifrError, match="training target 3 is outside 0..2"):
        train_small_cnn(paths, np.where(targets == 2, 3, targets), *cnn_eval, 3, ScratchConfig(epochs=1))
    with pytest.raises(ClassifrError, match="evaluation targets has 29 entries but there are 30 images"):
        train_small_cnn(paths, targets, cnn_eval[0], cnn_eval[1][:29], 3, ScratchConfig(epochs=1))


# --- size helpers -------------------------------------------------------------------------------


def test_parameter_count_of_the_cnn():
    model = SmallCNN(3, size=32)
    assert parameter_count(model) == sum(p.numel() for p in model.parameters())
    # Independently: conv weights (no bias) + BatchNorm weight and bias per block, then the linear layer.
    expected, channels = 0, 3
    for width in CNN_WIDTHS:
        expected += channels * width * 9 + 2 * width
        channels = width
    assert parameter_count(model) == expected + channels * 3 + 3


def test_parameter_count_of_the_classic_models(classic):
    features, classes = 32 * 32 * 3, len(CLASSES)
    scaler = 2 * features  # mean_ and scale_
    svc = classic["svm"].estimator[-1]
    support = int(svc.n_support_.sum())
    # Support vectors, one dual coefficient per other class for each, one intercept per class pair.
    assert parameter_count(classic["svm"]) == scaler + support * features + support * (classes - 1) + 3
    mlp = classic["dense"].estimator[-1]
    assert parameter_count(mlp) == features * 256 + 256 + 256 * classes + classes
    forest = classic["random forest"].estimator
    nodes = sum(tree.tree_.node_count for tree in forest.estimators_)
    assert parameter_count(forest) == nodes * (1 + classes)  # a threshold and a value per class per node


def test_parameter_count_refuses_unknown_objects():
    from sklearn.svm import SVC

    with pytest.raises(ClassifrError, match="SVC: it is not a torch module or a fitted"):
        parameter_count(SVC())
    with pytest.raises(ClassifrError, match="str"):
        parameter_count("model")


def test_checkpoint_of_the_cnn_loads_back(scratch, cnn_eval, tmp_path):
    result, _ = scratch
    path, size = checkpoint_bytes(result.model, tmp_path / "out", "cnn")
    assert path == tmp_path / "out" / "cnn.pt" and size == path.stat().st_size > 0
    model = SmallCNN(len(CLASSES), size=result.size)
    model.load_state_dict(torch.load(path, weights_only=True))
    inputs = prepare_scratch_inputs(result, cnn_eval[0])
    reloaded = predict_scratch(dataclasses.replace(result, model=model.eval()), inputs)
    assert np.array_equal(reloaded, predict_scratch(result, inputs))


@pytest.mark.parametrize("kind", CLASSIC_KINDS)
def test_checkpoint_of_a_classic_model_loads_back(kind, classic, pixels, tmp_path):
    path, size = checkpoint_bytes(classic[kind], tmp_path, kind)
    assert path == tmp_path / f"{kind}.joblib" and size == path.stat().st_size > 0
    assert np.array_equal(joblib.load(path).predict(pixels["eval"]), predict_classic(classic[kind], pixels["eval"]))


def test_checkpoint_name_must_be_a_file_name(classic, tmp_path):
    with pytest.raises(ClassifrError, match="'../x'"):
        checkpoint_bytes(classic["svm"], tmp_path, "../x")
