"""The parts of the full strategy's recipe: depth groups, discriminative rates, the frozen bottom,
per-photo augmentation and MixUp/CutMix (training/param_groups.py, training/augment.py, training/full.py).

Whether the recipe learns is tested in tests/test_training_full.py (the loop) and tests/test_training.py (the head strategy's floor).
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from classifr.core.errors import ConfigError
from tests.conftest import CLOTHING
from training.augment import BatchMixer, PhotoAugmentation
from training.full import FullConfig, _param_groups
from training.param_groups import depth_groups, frozen_count


def _names(model: torch.nn.Module, groups) -> list[list[str]]:
    by_id = {id(p): name for name, p in model.named_parameters()}
    return [[by_id[id(p)] for p in group] for group in groups]


@pytest.fixture(scope="module")
def lite0():
    from classifr.inference.backbones import build_offline_model

    return build_offline_model("lite0")


def test_efficientnet_groups_follow_timm_stages_without_the_head(lite0):
    names = _names(lite0, depth_groups(lite0))
    # stem, the 7 stages (the last with conv_head), input first; the classifier is never a depth group
    assert len(names) == 8
    assert names[0][0] == "timm_model.conv_stem.weight"
    assert all(name.startswith(f"timm_model.blocks.{stage}.") for stage in range(6) for name in names[stage + 1])
    assert "timm_model.conv_head.weight" in names[7]
    assert not any("classifier" in name for group in names for name in group)
    assert sum(len(group) for group in names) == len(list(lite0.parameters())) - 2


def test_transformers_vit_and_convnext_group_by_layer(tiny_vit_dir, tiny_convnext_dir):
    from transformers import AutoModelForImageClassification

    vit = AutoModelForImageClassification.from_pretrained(tiny_vit_dir)
    names = _names(vit, depth_groups(vit))
    layers = vit.config.num_hidden_layers
    assert len(names) == layers + 2  # embeddings, each layer, the final norm
    assert all(".embeddings." in name for name in names[0])
    assert all(f".layers.{i}." in name or f".layer.{i}." in name for i in range(layers) for name in names[i + 1])
    assert all("layernorm" in name for name in names[-1])

    convnext = AutoModelForImageClassification.from_pretrained(tiny_convnext_dir)
    names = _names(convnext, depth_groups(convnext))
    assert len(names) == len(convnext.config.depths) + 2
    assert all(".stages.0." in name for name in names[1])


def test_an_unknown_layout_is_one_group():
    class Plain(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Linear(4, 4)
            self.classifier = torch.nn.Linear(4, 2)

    model = Plain()
    assert _names(model, depth_groups(model)) == [["body.weight", "body.bias"]]


@pytest.mark.parametrize(("groups", "fraction", "frozen"), [(8, 1 / 3, 2), (8, 0.4, 3), (1, 0.9, 0), (2, 0.99, 1), (0, 0.5, 0)])
def test_frozen_count_keeps_the_top_group_trainable(groups, fraction, frozen):
    assert frozen_count(groups, fraction) == frozen


def test_rates_decay_with_depth_and_the_bottom_is_frozen(lite0):
    import copy

    model = copy.deepcopy(lite0).requires_grad_(True)
    config = FullConfig(learning_rate=1e-3, backbone_lr_scale=0.5, layer_decay=0.5, frozen_depth=0.4)
    groups = _param_groups(model, config)
    assert groups[0]["name"] == "head" and groups[0]["lr"] == 1e-3
    rates = [g["lr"] for g in groups[1:]]
    assert rates == pytest.approx([5e-4 * 0.5**i for i in range(len(rates))])
    assert len(rates) == 8 - 3  # 3 of the 8 depth groups frozen
    trained = {id(p) for g in groups for p in g["params"]}
    frozen = [name for name, p in model.named_parameters() if id(p) not in trained]
    assert frozen and all(name.startswith(("timm_model.conv_stem", "timm_model.bn1", "timm_model.blocks.0.",
                                           "timm_model.blocks.1.")) for name in frozen)
    assert not any(p.requires_grad for name, p in model.named_parameters() if name in frozen)


@pytest.mark.parametrize("policy", ["trivialaugment", "randaugment", "none"])
def test_photo_augmentation_gives_a_crop_of_the_photo(policy):
    from classifr.core.images import read_image

    photo = read_image(sorted((CLOTHING / "train" / "hat").glob("*.jpg"))[0]).image
    torch.manual_seed(0)
    crops = [PhotoAugmentation(policy)(photo) for _ in range(4)]
    for crop in crops:
        assert isinstance(crop, Image.Image) and crop.mode == "RGB"
        area = crop.width * crop.height / (photo.width * photo.height)
        assert 0.6 - 1e-2 <= area <= 1.0
    assert len({crop.tobytes() for crop in crops}) == 4  # random: four different images


def test_an_unknown_policy_is_refused_by_name():
    with pytest.raises(ConfigError, match="auto_augment.*'autoaugment'"):
        FullConfig(auto_augment="autoaugment")
    for field, value in (("label_smoothing", 1.0), ("frozen_depth", -0.1), ("layer_decay", 0), ("mixup_alpha", -1)):
        with pytest.raises(ConfigError, match=field):
            FullConfig(**{field: value})


def test_mixup_and_cutmix_give_mixed_probabilities():
    torch.manual_seed(0)
    pixels, labels = torch.rand(8, 3, 32, 32), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    mixer = BatchMixer(num_classes=3, mixup_alpha=0.2, cutmix_alpha=1.0)
    mixed, targets = mixer(pixels, labels)
    assert mixer.active and mixed.shape == pixels.shape and targets.shape == (8, 3)
    assert torch.allclose(targets.sum(-1), torch.ones(8))
    assert not torch.equal(mixed, pixels)
    off = BatchMixer(num_classes=3, mixup_alpha=0, cutmix_alpha=0)
    assert not off.active and off(pixels, labels)[1] is labels


def test_label_smoothing_spreads_only_over_the_trained_labels():
    from training.full import smoothed_cross_entropy

    torch.manual_seed(0)
    logits, labels = torch.randn(4, 6), torch.tensor([0, 1, 2, 0])
    everything = torch.arange(6)
    # Over every output it is PyTorch's own label smoothing; without smoothing plain cross-entropy.
    assert smoothed_cross_entropy(logits, labels, 0.1, everything) == pytest.approx(
        torch.nn.functional.cross_entropy(logits, labels, label_smoothing=0.1).item(), rel=1e-5)
    assert smoothed_cross_entropy(logits, labels, 0.0, torch.arange(3)) == pytest.approx(
        torch.nn.functional.cross_entropy(logits, labels).item(), rel=1e-5)
    # Outputs with no training image (kept ImageNet rows) get no target mass: once they are unlikely, the
    # loss keeps pushing them down (gradient >= 0) instead of pulling them up toward the smoothing share.
    unlikely = logits.clone()
    unlikely[:, 3:] = -10.0
    unlikely.requires_grad_(True)
    smoothed_cross_entropy(unlikely, labels, 0.1, torch.arange(3)).backward()
    assert (unlikely.grad[:, 3:] >= 0).all()
    unlikely.grad = None
    smoothed_cross_entropy(unlikely, labels, 0.1, everything).backward()
    assert (unlikely.grad[:, 3:] < 0).all()
    # MixUp/CutMix targets (probabilities) work the same.
    soft = torch.nn.functional.one_hot(labels, 6).float()
    assert smoothed_cross_entropy(logits, soft, 0.1, everything) == pytest.approx(
        smoothed_cross_entropy(logits, labels, 0.1, everything).item())


def test_the_kept_weights_are_the_moving_average(monkeypatch):
    """Each epoch evaluates and keeps the exponential moving average of the weights (timm's ModelEmaV3),
    not the last step's weights; ema_decay=0 keeps the weights as trained."""
    import training.full as full
    from tests.test_training_full import _rows
    from transformers import ConvNextConfig, ConvNextForImageClassification

    from classifr.core.preprocessing import FastPreprocessor

    torch.manual_seed(0)
    names = {0: "hat", 1: "shoes"}
    model = ConvNextForImageClassification(ConvNextConfig(
        hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, id2label=names, label2id={v: k for k, v in names.items()}))
    preprocess = FastPreprocessor(input_size=(32, 32), resize_shortest=36, resample=Image.Resampling.BILINEAR,
                                  mean=(0.5,) * 3, std=(0.5,) * 3)
    averages = []
    real = full._moving_average
    monkeypatch.setattr(full, "_moving_average", lambda m, c: averages.append(real(m, c)) or averages[-1])
    rows = _rows(("hat", "shoes"), 8)

    def train(**changes):
        config = FullConfig(epochs=1, batch_size=8, num_workers=0, learning_rate=1e-2, augment=False, **changes)
        return full.train_full(model, preprocess, rows, rows[:4], config=config, progress=False)

    averaged = train()
    kept, average = averaged.model.state_dict(), averages[-1].module.state_dict()
    assert all(torch.equal(kept[name], average[name].cpu()) for name in kept)
    plain = train(ema_decay=0.0)
    assert averages[-1] is None
    assert any(not torch.equal(plain.model.state_dict()[name], kept[name]) for name in kept)
