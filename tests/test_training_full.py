"""The full strategy (training/full.py): fine-tuning whole models with accelerate, on CPU.

Mechanics run on a tiny random ConvNeXt (fast; there, learning shows as a falling training loss);
whether training really learns is checked on the real pretrained default model at a reduced input
size, because a randomly initialised tiny model cannot reliably tell real photos apart from a few
dozen examples (measured: a logistic regression on thumbnails of hat vs shoes reaches about 70%,
the tiny ConvNeXt about the same).
All photos come from ../shared/datasets/clothing-small; everything written goes to tmp_path.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import torch
from PIL import Image

from classifr.core.errors import ClassifrError, ConfigError
from classifr.inference.classifier import Classifier
from tests.conftest import CLOTHING
from training.full import HISTORY_KEYS, FullConfig, FullResult, resolve_mixed_precision, train_full

CLASSES = ("hat", "shoes", "pants")
FAST = dict(batch_size=8, num_workers=0, learning_rate=3e-3, backbone_lr_scale=1.0)




def _rows(classes: tuple[str, ...], count: int, offset: int = 0) -> list[tuple[Path, int]]:
    """The `count` photos after `offset` (sorted by name) of each class, labelled by class index."""
    return [
        (path, label)
        for label, name in enumerate(classes)
        for path in sorted((CLOTHING / "train" / name).glob("*.jpg"))[offset : offset + count]
    ]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Classifier:
    """A random ConvNeXt with 3 outputs (hat, shoes, pants), saved and loaded like a real version."""
    from transformers import ConvNextConfig, ConvNextForImageClassification, ConvNextImageProcessor

    torch.manual_seed(0)
    labels = dict(enumerate(CLASSES))
    config = ConvNextConfig(
        num_channels=3, hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, image_size=64,
        id2label=labels, label2id={v: k for k, v in labels.items()},
    )
    folder = tmp_path_factory.mktemp("tiny-full")
    ConvNextForImageClassification(config).save_pretrained(folder)
    ConvNextImageProcessor(size={"shortest_edge": 64}, crop_pct=0.875).save_pretrained(folder)
    return Classifier.load(folder, version="t")


@pytest.fixture(scope="module")
def train_rows() -> list[tuple[Path, int]]:
    return _rows(CLASSES, 8)  # 24 photos: 3 batches of 8 per epoch


@pytest.fixture(scope="module")
def eval_rows() -> list[tuple[Path, int]]:
    return _rows(CLASSES, 4, offset=8)


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def _run(tiny: Classifier, train, evaluation, **kwargs) -> FullResult:
    config = FullConfig(**{**FAST, **kwargs.pop("config", {})})
    return train_full(tiny.model, tiny.preprocess, train, evaluation, config=config, progress=False, **kwargs)


@pytest.mark.slow  # over 0.25 s: outside the edit loop's fast subset
def test_two_epochs_train_a_copy_and_report_history(tiny, train_rows, eval_rows):
    before = _state(tiny.model)
    seen: list[dict] = []
    # Augmentation and loader workers on: the paths a real run takes.
    result = _run(tiny, train_rows, eval_rows, config=dict(epochs=2, augment=True, num_workers=2), on_epoch=seen.append)

    assert [h["epoch"] for h in result.history] == [1, 2]
    assert seen == result.history
    for record in result.history:
        assert set(HISTORY_KEYS) <= set(record)
        assert 0.0 <= record["eval_accuracy"] <= 1.0  # a random tiny model stays near chance (see the docstring)
        assert record["train_loss"] > 0 and record["seconds"] > 0 and record["images_per_second"] > 0
    # It learns: measured over seeds 0-7, the loss falls by 0.03-0.08 from epoch 1 to 2; with the
    # learning rate at ~0 it moves by at most 0.011 (augmentation noise).
    losses = [h["train_loss"] for h in result.history]
    assert losses[1] < losses[0] - 0.02, losses
    assert result.stop_reason == "completed" and result.steps == 2 * (len(train_rows) // 8)
    assert result.best_epoch in (1, 2)
    assert result.best_accuracy == result.history[result.best_epoch - 1]["eval_accuracy"]
    assert result.train_seconds > 0

    model = result.model
    assert model is not tiny.model and not model.training
    assert all(p.device.type == "cpu" for p in model.parameters())
    after = model.state_dict()
    assert any(not torch.equal(before[name], after[name]) for name in before), "the weights did not change"
    assert all(torch.equal(before[name], tensor) for name, tensor in tiny.model.state_dict().items()), "input changed"
    assert not tiny.model.training
    # The result is a plain module: it predicts as the served model does.
    logits = model(pixel_values=tiny.preprocess([Image.new("RGB", (80, 60))])).logits
    assert logits.shape == (1, len(CLASSES)) and torch.isfinite(logits).all()


SMALL_SIZE = 96  # px: a quarter of the pixels of the served 224, still ~0.95 with a linear probe on hat vs shoes


@pytest.fixture(scope="module")
def small_default(default_classifier) -> tuple[torch.nn.Module, object]:
    """The pretrained default model with a new 2-row head (hat, shoes) at zero, as `classifr train
    --strategy full --new-head` starts it, at 96 px to keep CPU time low."""
    model = copy.deepcopy(default_classifier.model)
    model.timm_model.reset_classifier(2)
    head = model.timm_model.get_classifier()
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    model.config.id2label = {0: "hat", 1: "shoes"}
    model.config.label2id = {"hat": 0, "shoes": 1}
    model.config.num_labels = 2
    preprocess = default_classifier.preprocess
    # Same mean, std and resampling as served (from the model's config); only the size is smaller.
    crop = preprocess.input_size[0] / preprocess.resize_shortest
    preprocess = dataclasses.replace(preprocess, input_size=(SMALL_SIZE, SMALL_SIZE), resize_shortest=round(SMALL_SIZE / crop))
    return model, preprocess


def _accuracy(model: torch.nn.Module, preprocess, rows: list[tuple[Path, int]]) -> float:
    """Top-1 accuracy of `model` on `rows`, decoded and preprocessed as served."""
    from classifr.core.images import read_image

    pixels = preprocess([read_image(path, min_side=preprocess.min_side).image for path, _ in rows])
    with torch.no_grad():
        predictions = model.eval()(pixel_values=pixels).logits.argmax(-1)
    return float((predictions == torch.tensor([label for _, label in rows])).float().mean())


@pytest.mark.slow
def test_fine_tuning_the_pretrained_model_learns_hat_vs_shoes(small_default):
    model, preprocess = small_default
    train, evaluation = _rows(("hat", "shoes"), 16), _rows(("hat", "shoes"), 16, offset=16)
    untrained = _accuracy(model, preprocess, evaluation)  # a zero head: every photo is "hat"
    config = FullConfig(epochs=3, batch_size=8, learning_rate=1e-3, augment=False, num_workers=0, patience=3)

    result = train_full(model, preprocess, train, evaluation, config=config, progress=False)

    losses = [h["train_loss"] for h in result.history]
    assert len(result.history) == 3 and result.stop_reason == "completed"
    # Measured over seeds 0-6: the last epoch's loss is 0.02-0.10 of the first's; on these 32 held-out
    # photos the best epoch scores 0.94-1.0, the last one 0.84-1.0 (0.97 with seed 0), the untrained head 0.5.
    assert losses[-1] < 0.5 * losses[0], losses
    assert untrained <= 0.6
    assert result.best_accuracy >= 0.9 and result.best_accuracy >= untrained + 0.3, (untrained, result.history)
    assert result.history[-1]["eval_accuracy"] >= 0.85, result.history
    # The returned model is the learned one: it scores its epoch's accuracy through the served preprocessing.
    assert _accuracy(result.model, preprocess, evaluation) == pytest.approx(result.best_accuracy, abs=1 / 32)


@pytest.mark.slow
def test_a_learning_rate_of_zero_is_caught(small_default, monkeypatch):
    """The learning test's run with every learning rate set to 0 (FullConfig refuses 0, so the
    optimizer's groups are zeroed): the loss stays at ln 2 and the accuracy at the zero head's, so
    each of the learning test's assertions would fail. (A rate of 1e-12 is not enough: Adam's
    normalised steps still tip the argmax of a zero head the right way.)"""
    import training.full as full

    real_groups = full._param_groups
    monkeypatch.setattr(full, "_param_groups", lambda model, config: [
        {**group, "lr": 0.0} for group in real_groups(model, config)])
    model, preprocess = small_default
    train, evaluation = _rows(("hat", "shoes"), 16), _rows(("hat", "shoes"), 16, offset=16)
    untrained = _accuracy(model, preprocess, evaluation)
    config = FullConfig(epochs=2, batch_size=8, augment=False, num_workers=0)

    result = train_full(model, preprocess, train, evaluation, config=config, progress=False)

    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] > 0.95 * losses[0], losses
    assert result.best_accuracy == pytest.approx(untrained), (untrained, result.history)


@pytest.mark.slow
@pytest.mark.parametrize("freeze", [True, False])
def test_batchnorm_statistics_stay_pretrained_unless_asked(small_default, freeze):
    """One step on 8 photos: with freeze_batchnorm (the default) every running mean and variance is
    the pretrained one; without it they move toward this batch's statistics."""
    model, preprocess = small_default
    config = FullConfig(epochs=1, batch_size=8, max_steps=1, augment=False, num_workers=0, freeze_batchnorm=freeze)
    result = train_full(model, preprocess, _rows(("hat", "shoes"), 4), _rows(("hat", "shoes"), 2, offset=4),
                        config=config, progress=False)
    stats = [name for name, _ in model.named_buffers() if name.endswith(("running_mean", "running_var"))]
    before, after = dict(model.named_buffers()), dict(result.model.named_buffers())
    unchanged = [torch.equal(before[name], after[name]) for name in stats]
    assert len(stats) > 90 and (all(unchanged) if freeze else not any(unchanged))
    with pytest.raises(ConfigError, match="freeze_batchnorm"):
        FullConfig(freeze_batchnorm="yes")


@pytest.mark.slow  # over 0.25 s: outside the edit loop's fast subset
def test_max_steps_stops_after_one_step(tiny, train_rows, eval_rows):
    result = _run(tiny, train_rows, eval_rows, config=dict(epochs=3, max_steps=1))

    assert result.steps == 1 and result.stop_reason == "max_steps"
    assert len(result.history) == 1 and result.history[0]["steps"] == 1
    assert result.best_epoch == 1


@pytest.mark.slow  # over 0.25 s: outside the edit loop's fast subset
def test_should_stop_cancels_after_the_first_step(tiny, train_rows, eval_rows):
    polls: list[int] = []

    def should_stop() -> bool:
        polls.append(1)
        return True

    before = _state(tiny.model)
    result = _run(tiny, train_rows, eval_rows, config=dict(epochs=3), should_stop=should_stop)

    assert polls == [1] and result.steps == 1
    assert result.stop_reason == "cancelled" and result.history == [] and result.best_epoch == 0
    assert isinstance(result.model, torch.nn.Module) and not result.model.training
    assert set(result.model.state_dict()) == set(before)


@pytest.mark.slow  # over 0.25 s: outside the edit loop's fast subset
def test_cancelling_later_keeps_the_best_evaluated_epoch(tiny, train_rows, eval_rows):
    steps_per_epoch = len(train_rows) // 8
    polls: list[int] = []

    def should_stop() -> bool:
        polls.append(1)
        return len(polls) > steps_per_epoch  # cancel on the first step of epoch 2

    result = _run(tiny, train_rows, eval_rows, config=dict(epochs=3), should_stop=should_stop)

    assert result.stop_reason == "cancelled" and result.steps == steps_per_epoch + 1
    assert len(result.history) == 1 and result.best_epoch == 1


@pytest.mark.slow  # over 0.25 s: outside the edit loop's fast subset
def test_early_stopping_when_accuracy_cannot_improve(tiny, train_rows, eval_rows):
    # A learning rate this large turns the weights into inf/NaN at once: the predictions stop changing.
    result = _run(tiny, train_rows, eval_rows, config=dict(epochs=5, patience=1, learning_rate=1e30, warmup_ratio=0.0))

    assert result.stop_reason == "early_stopping"
    assert len(result.history) == 2 < 5
    assert result.best_epoch == 1


@pytest.mark.parametrize(
    ("train", "evaluation", "message"),
    [
        ([], "eval", "no training images"),
        ("train", [], "no evaluation images"),
        ("bad-label", "eval", "label 3, outside the model's 3 outputs"),
        ("train", "negative-label", "label -1"),
    ],
)
def test_bad_input_is_refused_with_the_reason(tiny, train_rows, eval_rows, train, evaluation, message):
    bad = {"bad-label": train_rows[:-1] + [(train_rows[-1][0], 3)], "negative-label": [(eval_rows[0][0], -1)]}
    choose = {"train": train_rows, "eval": eval_rows, **bad}
    train = choose.get(train, train) if isinstance(train, str) else train
    evaluation = choose.get(evaluation, evaluation) if isinstance(evaluation, str) else evaluation

    with pytest.raises(ClassifrError, match=message):
        _run(tiny, train, evaluation)


@pytest.mark.parametrize(
    ("field", "value"),
    [("epochs", 0), ("batch_size", True), ("learning_rate", -1.0), ("warmup_ratio", 1.0),
     ("mixed_precision", "fp32"), ("max_steps", 0), ("num_workers", -1)],
)
def test_bad_config_names_the_setting(field, value):
    with pytest.raises(ConfigError, match=f"FullConfig.{field} .*{value!r}"):
        FullConfig(**{field: value})


def test_auto_mixed_precision_is_off_on_cpu_and_defers_to_accelerate_launch(monkeypatch):
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_mixed_precision("auto") == "no"
    assert resolve_mixed_precision("bf16") == "bf16"
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")
    assert resolve_mixed_precision("auto") is None  # the launch configuration decides


@pytest.mark.slow  # over 0.25 s: outside the edit loop's fast subset
def test_no_tracker_writes_nothing(tiny, train_rows, eval_rows, tmp_path, monkeypatch):
    cwd, project = tmp_path / "cwd", tmp_path / "project"
    cwd.mkdir()
    project.mkdir()
    monkeypatch.chdir(cwd)

    _run(tiny, train_rows, eval_rows, config=dict(max_steps=1), log_with=None, project_dir=project)

    assert list(cwd.iterdir()) == [] and list(project.iterdir()) == []


@pytest.mark.slow  # over 0.25 s: outside the edit loop's fast subset
def test_trackers_get_the_config_and_every_epoch(tiny, train_rows, eval_rows, tmp_path):
    """An in-memory tracker (accelerate's GeneralTracker API) stands in for the real one, not chosen yet."""
    from accelerate.tracking import GeneralTracker

    class Recorder(GeneralTracker):
        name = "recorder"
        requires_logging_directory = False

        def __init__(self) -> None:
            super().__init__()
            self.config: dict | None = None
            self.logged: list[tuple[dict, int]] = []
            self.finished = False

        @property
        def tracker(self):
            return self

        def store_init_configuration(self, values: dict) -> None:
            self.config = values

        def log(self, values: dict, step: int | None = None, **kwargs) -> None:
            self.logged.append((values, step))

        def finish(self) -> None:
            self.finished = True

    recorder = Recorder()
    result = _run(tiny, train_rows, eval_rows, config=dict(epochs=2), log_with=recorder, project_dir=tmp_path)

    assert recorder.config is not None and recorder.config["epochs"] == 2 and "max_steps" not in recorder.config
    assert [values["epoch"] for values, _ in recorder.logged] == [1, 2]
    assert [step for _, step in recorder.logged] == [h["steps"] for h in result.history]
    assert recorder.logged[-1][0]["eval_accuracy"] == result.history[-1]["eval_accuracy"]
    assert recorder.finished


def test_an_unknown_tracker_is_refused_by_name(tiny, train_rows, eval_rows, tmp_path):
    with pytest.raises(ClassifrError, match="no-such-tracker"):
        _run(tiny, train_rows, eval_rows, config=dict(max_steps=1), log_with="no-such-tracker", project_dir=tmp_path)
