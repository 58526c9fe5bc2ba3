"""Explanations, tested by their properties as Captum tests itself, on tiny and real models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from classifr.core.errors import LabelError
from classifr.inference.classifier import Classifier
from classifr.inference.explain import METHODS, Explainer, ExplainError, find_stages


def _photos(clothing_dir, count):
    return [Image.open(p).convert("RGB") for p in sorted((clothing_dir / "test").rglob("*.jpg"))[:count]]


@pytest.fixture(scope="module")
def tiny_explainers(tiny_vit_dir, tiny_convnext_dir):
    return {
        "vit": Explainer(Classifier.load(tiny_vit_dir, version="tiny-vit")),
        "convnext": Explainer(Classifier.load(tiny_convnext_dir, version="tiny-convnext")),
    }


@pytest.fixture(scope="module")
def default_explainer(default_classifier):
    return Explainer(default_classifier)


@pytest.mark.parametrize("arch", ["vit", "convnext"])
@pytest.mark.parametrize("method", METHODS)
def test_tiny_models_go_through_every_method(tiny_explainers, arch, method, clothing_dir):
    explainer = tiny_explainers[arch]
    image = _photos(clothing_dir, 1)[0]
    explanation = explainer.explain(image, method=method, steps=8)
    height, width = explainer.classifier.preprocess([image]).shape[-2:]
    assert explanation.heatmap.shape == (height, width)
    assert explanation.heatmap.dtype == np.float32
    assert 0 <= explanation.heatmap.min() and explanation.heatmap.max() <= 1
    assert explanation.target == explainer.classifier.labels.names[explanation.target_index]


@pytest.mark.parametrize("arch", ["vit", "convnext"])
def test_tiny_models_show_their_stages(tiny_explainers, arch, clothing_dir):
    stages = tiny_explainers[arch].stage_maps(_photos(clothing_dir, 1)[0])
    assert len(stages) == 2  # both tiny configs have two stages / layers
    for stage in stages:
        assert stage.heatmap.ndim == 2 and stage.heatmap.min() >= 0 and stage.heatmap.max() <= 1


def test_vit_stage_is_the_patch_grid_without_the_class_token(tiny_explainers, clothing_dir):
    """32 px input, 8 px patches: 16 patch tokens + CLS -> a 4x4 grid."""
    stages = tiny_explainers["vit"].stage_maps(_photos(clothing_dir, 1)[0])
    assert stages[-1].heatmap.shape == (4, 4) and stages[-1].channels == 32


def test_stages_are_found_per_architecture(tiny_explainers):
    assert [n for n, _ in find_stages(tiny_explainers["vit"].model)] == ["layers.0", "layers.1"]
    assert [n for n, _ in find_stages(tiny_explainers["convnext"].model)] == ["stages.0", "stages.1"]
    assert tiny_explainers["convnext"].gradcam_stage[0] == "stages.1"


@pytest.mark.slow
def test_stages_of_the_default_model(default_explainer):
    """EfficientNet-Lite0 (timm): its blocks are the stages; Grad-CAM uses the one before the last."""
    assert [n for n, _ in find_stages(default_explainer.classifier.model)][-1] == "blocks.6"
    assert default_explainer.gradcam_stage[0] == "blocks.5"  # see gradcam_stage()


def test_ig_completeness(tiny_explainers, clothing_dir):
    """Attributions sum to f(x) - f(baseline), within the convergence delta Captum reports."""
    explainer = tiny_explainers["convnext"]
    images = _photos(clothing_dir, 2)
    pixels = explainer.classifier.preprocess(images).contiguous()
    baselines = torch.cat([explainer.baseline(image, "black") for image in images])
    attributions, delta = explainer.integrated_gradients(pixels, [0, 2], baselines, steps=64)
    with torch.no_grad():
        logits, base = explainer.forward(pixels), explainer.forward(baselines)
    expected = torch.stack([logits[0, 0] - base[0, 0], logits[1, 2] - base[1, 2]])
    total = attributions.flatten(1).sum(1)
    assert attributions.shape == pixels.shape
    assert torch.allclose(total - expected, delta.to(total.dtype), atol=1e-4)
    assert (delta.abs() <= 0.05 * expected.abs() + 1e-3).all()


@pytest.mark.slow
def test_ig_completeness_on_the_default_model(default_explainer, sandal_photo):
    image = Image.open(sandal_photo).convert("RGB")
    explanation = default_explainer.explain(image, method="ig", steps=32)
    pixels = default_explainer.classifier.preprocess([image]).contiguous()
    with torch.no_grad():
        gap = (default_explainer.forward(pixels) - default_explainer.forward(default_explainer.baseline(image, "black")))
    gap = float(gap[0, explanation.target_index])
    assert abs(explanation.convergence_delta) < 0.1 * abs(gap)  # 32 steps are within 10% of exact


def test_gradcam_of_a_batch_equals_its_single_items(tiny_explainers, clothing_dir):
    explainer = tiny_explainers["convnext"]
    images = _photos(clothing_dir, 3)
    pixels = explainer.classifier.preprocess(images).contiguous()
    batched = explainer.gradcam(pixels, [0, 1, 3])
    singles = torch.cat([explainer.gradcam(pixels[i : i + 1], [t]) for i, t in enumerate([0, 1, 3])])
    assert batched.shape == (3, *pixels.shape[-2:])
    assert torch.allclose(batched, singles, atol=1e-5)


def test_occlusion_of_a_batch_equals_its_single_items(tiny_explainers, clothing_dir):
    explainer = tiny_explainers["vit"]
    pixels = explainer.classifier.preprocess(_photos(clothing_dir, 2)).contiguous()
    batched = explainer.occlusion(pixels, [1, 2], window=8, stride=8)
    singles = torch.cat([explainer.occlusion(pixels[i : i + 1], [t], window=8, stride=8) for i, t in enumerate([1, 2])])
    assert torch.allclose(batched, singles, atol=1e-5)


@pytest.mark.slow
def test_gradcam_finds_a_real_object_pasted_on_a_plain_canvas(default_explainer, sandal_photo):
    """A real shoe photo pasted at a known spot of a plain canvas: most Grad-CAM mass falls on it."""
    canvas = Image.new("RGB", (640, 640), (235, 235, 235))
    shoe = Image.open(sandal_photo).convert("RGB").resize((210, 280))
    box = (80, 100, 290, 380)
    canvas.paste(shoe, box[:2])
    # On this canvas the top-1 is not the shoe; explain the label of the object that was placed.
    explanation = default_explainer.explain(canvas, method="gradcam", target="sandal")
    heat = explanation.heatmap
    left, top, right, bottom = explanation.input_box  # the canvas region the model saw
    scale = heat.shape[1] / (right - left)
    inside = heat[round((box[1] - top) * scale) : round((box[3] - top) * scale), round((box[0] - left) * scale) : round((box[2] - left) * scale)]
    share_of_area = inside.size / heat.size
    share_of_mass = inside.sum() / heat.sum()
    assert share_of_mass > 0.6 and share_of_mass > 2 * share_of_area


def test_target_can_be_any_label(tiny_explainers, clothing_dir):
    explainer = tiny_explainers["convnext"]
    image = _photos(clothing_dir, 1)[0]
    assert explainer.explain(image, target="HAT").target == "hat"  # matched ignoring case
    with pytest.raises(LabelError, match="unknown label 'zebra'"):
        explainer.explain(image, target="zebra")


@pytest.mark.parametrize(
    "kwargs, message",
    [({"method": "lime"}, "unknown explanation method 'lime'"), ({"method": "ig", "baseline": "noise"}, "unknown baseline 'noise'"),
     ({"method": "ig", "steps": 0}, "steps must be between 1 and 512, got 0")],
)
def test_bad_options_are_named(tiny_explainers, clothing_dir, kwargs, message):
    with pytest.raises(ExplainError, match=message):
        tiny_explainers["vit"].explain(_photos(clothing_dir, 1)[0], **kwargs)


def test_explaining_leaves_the_serving_model_untouched(tiny_convnext_dir, clothing_dir):
    """Captum's hooks live on the explainer's own copy: the serving model keeps no hooks but the
    classifier's own feature probe, and its answers."""

    def foreign_hooks(module) -> list:
        return [h for h in module._forward_hooks.values() if type(h).__name__ != "_HeadInputProbe"]

    classifier = Classifier.load(tiny_convnext_dir, version="tiny")
    image = _photos(clothing_dir, 1)[0]
    before = classifier.logits([image])
    explainer = Explainer(classifier)
    for method in METHODS:
        explainer.explain(image, method=method, steps=4)
    assert explainer.model is not classifier.model
    assert all(not foreign_hooks(m) and not m._backward_hooks for m in classifier.model.modules())
    assert all(not foreign_hooks(m) for m in explainer.model.modules())  # removed after use, too
    assert torch.equal(before, classifier.logits([image]))


@pytest.mark.slow
def test_service_draws_on_the_full_size_photo_even_after_a_draft_decode(fresh_home, sandal_photo, tmp_path):
    """A 2000x1500 JPEG is decoded at 1/4 for the model; the overlay still has the photo's size."""
    from classifr.app.project import open_service
    from classifr.core.config import Settings

    big = tmp_path / "big.jpg"
    Image.open(sandal_photo).convert("RGB").resize((2000, 1500)).save(big, quality=90)
    service = open_service(Settings.from_env({"CLASSIFR_HOME": str(fresh_home)}))
    try:
        result = service.explain(big, method="gradcam")
        assert result.picture.size == (2000, 1500) and result.version == "v1"
        shown = service.explain(big, method="gradcam", view="side-by-side", max_side=800)
        assert max(shown.picture.size) == 800 and shown.picture.width > shown.picture.height
        assert service.explain_layers(big).stages[-1].name == "blocks.6"
    finally:
        service.close()


def test_cli_offers_exactly_the_library_choices():
    """The CLI spells the choices out (importing torch would slow `classifr --help`); keep them in step."""
    from classifr.cli import build_parser
    from classifr.inference.explain import BASELINES
    from classifr.inference.overlay import VIEWS

    explain = build_parser()._subparsers._group_actions[0].choices["explain"]
    choices = {action.dest: tuple(action.choices) for action in explain._actions if action.choices}
    assert choices == {"method": (*METHODS, "layers"), "view": VIEWS, "baseline": BASELINES}
