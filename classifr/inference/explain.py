"""Why the model decided: Captum attributions for any served model.

Methods: Grad-CAM and GradCAM++ on the last stage of the backbone, Integrated Gradients with a
chosen baseline, Occlusion; plus the mean activation of every stage ("layers"). The stages are
found per architecture: timm models through their `feature_info`, Transformers ConvNeXt-style
models through `encoder.stages`, ViT-style models through their transformer layers, whose tokens
are reshaped to the patch grid (class and register tokens dropped).

An Explainer works on its own copy of the model, so the hooks Captum registers never touch the
model that serves predictions in other threads.
"""

from __future__ import annotations

import copy
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, Occlusion
from PIL import Image, ImageFilter

from classifr.core.errors import ClassifrError
from classifr.inference.classifier import Classifier

logger = logging.getLogger(__name__)

METHODS = ("gradcam", "gradcam++", "ig", "occlusion")
BASELINES = ("black", "blur", "mean")
IG_STEPS = 32
IG_INTERNAL_BATCH = 8  # bounds memory: at most this many interpolated images go through at once
OCCLUSION_BATCH = 8  # larger batches were no faster per image on CPU
GRADCAM_PP_EPSILON = 1e-6  # as pytorch-grad-cam's GradCAMPlusPlus, the reference the tests compare with


class ExplainError(ClassifrError, ValueError):
    """An explanation could not be made (unknown method, a model without known stages, ...)."""


@dataclass(frozen=True)
class Explanation:
    method: str
    target: str
    target_index: int
    score: float  # the model's probability for the target label
    heatmap: np.ndarray  # float32 (H, W) in [0, 1] over the model input
    input_box: tuple[float, float, float, float]  # the part of the image the model saw
    seconds: float
    convergence_delta: float | None = None  # Integrated Gradients only
    settings: str = ""  # e.g. "32 steps, black baseline"

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "target": self.target,
            "score": self.score,
            "seconds": self.seconds,
            "convergence_delta": self.convergence_delta,
            "settings": self.settings,
        }


@dataclass(frozen=True)
class StageMap:
    name: str
    channels: int
    heatmap: np.ndarray  # float32 (h, w) in [0, 1], the channel mean of the stage's activation


class _Logits(torch.nn.Module):
    """Captum calls forward(pixel_values) and expects logits, not a ModelOutput."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits


class _GridProbe(torch.nn.Module):
    """An identity that sees a stage's output as a (B, C, h, w) grid; Captum hooks this module."""

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        return grid


def _first(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


def _to_grid(activation: torch.Tensor) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """(B, C, h, w) as is; (B, N, D) tokens -> (B, D, s, s) patch grid, prefix tokens set aside."""
    if activation.ndim == 4:
        return activation, lambda grid: grid
    if activation.ndim != 3:
        raise ExplainError(f"cannot read a stage output of shape {tuple(activation.shape)} as an image grid")
    batch, tokens, dim = activation.shape
    side = math.isqrt(tokens)
    prefix = tokens - side * side  # class token, register tokens
    patches, head = activation[:, prefix:, :], activation[:, :prefix, :]
    grid = patches.transpose(1, 2).reshape(batch, dim, side, side)

    def back(new_grid: torch.Tensor) -> torch.Tensor:
        return torch.cat([head, new_grid.reshape(batch, dim, side * side).transpose(1, 2)], dim=1)

    return grid, back


def _replace_first(output: Any, value: torch.Tensor) -> Any:
    if isinstance(output, tuple):
        return (value, *output[1:])
    if isinstance(output, list):
        return [value, *output[1:]]
    return value


def find_stages(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """The backbone's stages, shallow to deep; empty when the architecture is not known."""
    timm_model = getattr(model, "timm_model", None)
    if timm_model is not None and getattr(timm_model, "feature_info", None):
        return [(info["module"], timm_model.get_submodule(info["module"])) for info in timm_model.feature_info]
    base = getattr(model, "base_model", model)
    encoder = getattr(base, "encoder", None)
    for owner, attribute in ((encoder, "stages"), (base, "layers"), (encoder, "layer"), (encoder, "layers")):
        modules = getattr(owner, attribute, None) if owner is not None else None
        if isinstance(modules, torch.nn.ModuleList) and len(modules):
            return [(f"{attribute}.{i}", module) for i, module in enumerate(modules)]
    return []


def gradcam_stage(
    model: torch.nn.Module, stages: list[tuple[str, torch.nn.Module]]
) -> tuple[str, torch.nn.Module] | None:
    """The stage Grad-CAM and GradCAM++ read: the last one, unless that is a single block after a
    deeper stage, or the last layer of a transformer that classifies from its class token.

    EfficientNet's last stage (`blocks.6`) is one inverted-residual block that mostly projects
    channels; its Grad-CAM spreads over the whole image. The stage before it has the same 7x7
    grid and several blocks. Measured on a real shoe photo pasted on a plain 640 px canvas, the
    share of Grad-CAM mass on the shoe (19% of the area): 40% from blocks.6, 58% from the head
    conv, 91-98% from blocks.5.

    A ViT's head reads only the class token, and after the last layer nothing mixes tokens: the
    gradient at that layer's patch tokens is zero, and so is the map. The layer before feeds the
    last layer's attention (pytorch-grad-cam reads a ViT there too, at the last block's input).
    """
    if not stages:
        return None
    name, module = stages[-1]
    if len(stages) > 1 and _reads_a_class_token(model):
        return stages[-2]
    prefix, _, index = name.rpartition(".")
    if isinstance(module, torch.nn.Sequential) and len(module) == 1 and index.isdigit() and int(index) > 0:
        owner = getattr(model, "timm_model", model)
        previous = f"{prefix}.{int(index) - 1}"
        return previous, owner.get_submodule(previous)
    return name, module


def _reads_a_class_token(model: torch.nn.Module) -> bool:
    """timm ViTs pool with `global_pool="token"`; Transformers ViT-style models (ViT, DeiT, BEiT,
    ...) keep their class token on the embeddings."""
    timm_model = getattr(model, "timm_model", None)
    if timm_model is not None:
        return getattr(timm_model, "global_pool", None) == "token"
    embeddings = getattr(getattr(model, "base_model", model), "embeddings", None)
    return isinstance(getattr(embeddings, "cls_token", None), torch.nn.Parameter)


def _normalize(heatmap: torch.Tensor) -> np.ndarray:
    heatmap = heatmap.detach().float().clamp(min=0)
    peak = heatmap.max()
    return (heatmap / peak if peak > 0 else heatmap).numpy().astype(np.float32)


class Explainer:
    """Attributions for one model version. One explanation at a time; safe to share between threads."""

    def __init__(self, classifier: Classifier) -> None:
        self.classifier = classifier
        self.model = copy.deepcopy(classifier.model).eval()
        self.forward = _Logits(self.model)
        self.stages = find_stages(self.model)
        self.gradcam_stage = gradcam_stage(self.model, self.stages)
        self._lock = threading.Lock()

    # -- raw attributions, batched (what the property tests check) --------------------------------

    def gradcam(self, pixels: torch.Tensor, targets: Sequence[int]) -> torch.Tensor:
        """Grad-CAM on the last stage, upsampled to the input: (B, H, W), non-negative."""
        probe = _GridProbe()
        with self._probe_last_stage(probe):
            maps = LayerGradCam(self.forward, probe).attribute(pixels, target=list(targets), relu_attributions=True)
        return LayerAttribution.interpolate(maps, tuple(pixels.shape[-2:]), "bilinear")[:, 0]

    def gradcam_plus_plus(self, pixels: torch.Tensor, targets: Sequence[int]) -> torch.Tensor:
        """GradCAM++ on the same stage as Grad-CAM, upsampled to the input: (B, H, W), non-negative.

        Chattopadhay et al. 2018 in the closed form the `grad-cam` package uses (its eq. 19): each
        grid cell's gradient gets a weight alpha = g^2 / (2 g^2 + sum(A) g^3), so a channel's few
        strongly positive cells count as much as a broad weak response (docs/features.md).
        """
        probe = _GridProbe()
        with self._probe_last_stage(probe, method="GradCAM++"):
            activations, gradients = self._probe_activations_and_gradients(probe, pixels, targets)
        spatial_sum = activations.sum(dim=(2, 3), keepdim=True)
        squared = gradients.pow(2)
        # The reference's epsilon, kept: over half of EfficientNet's gradients at blocks.5 have
        # g^2 < 1e-6, so it changes the map; without it, the correlation with the reference was
        # 0.57-0.99 on real photos instead of 1.000.
        alpha = squared / (2 * squared + spatial_sum * squared * gradients + GRADCAM_PP_EPSILON)
        alpha = torch.where(gradients != 0, alpha, 0)
        weights = (alpha * gradients.clamp(min=0)).sum(dim=(2, 3), keepdim=True)
        maps = (weights * activations).sum(dim=1, keepdim=True).clamp(min=0)
        return LayerAttribution.interpolate(maps, tuple(pixels.shape[-2:]), "bilinear")[:, 0]

    def _probe_activations_and_gradients(
        self, probe: _GridProbe, pixels: torch.Tensor, targets: Sequence[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The probe's grid (B, C, h, w) and the gradient of each image's target logit with respect to it."""
        captured: list[torch.Tensor] = []
        handle = probe.register_forward_hook(lambda _module, _inputs, output: captured.append(output))
        try:
            with torch.enable_grad():
                # Gradients must reach the probe even where the model's weights are frozen.
                logits = self.forward(pixels.detach().requires_grad_(True))
                chosen = logits.gather(1, torch.as_tensor(list(targets), device=logits.device).unsqueeze(1))
                (gradients,) = torch.autograd.grad(chosen.sum(), captured[0])
        finally:
            handle.remove()
        return captured[0].detach(), gradients.detach()

    def integrated_gradients(
        self, pixels: torch.Tensor, targets: Sequence[int], baselines: torch.Tensor, *, steps: int = IG_STEPS
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-pixel, per-channel attributions (B, 3, H, W) and the convergence delta per image."""
        ig = IntegratedGradients(self.forward)
        return ig.attribute(
            pixels,
            baselines=baselines,
            target=list(targets),
            n_steps=steps,
            internal_batch_size=IG_INTERNAL_BATCH,
            return_convergence_delta=True,
        )

    def occlusion(self, pixels: torch.Tensor, targets: Sequence[int], *, window: int, stride: int) -> torch.Tensor:
        """Drop in the target's logit when a window is greyed out (the mean colour): (B, 3, H, W)."""
        return Occlusion(self.forward).attribute(
            pixels,
            target=list(targets),
            sliding_window_shapes=(pixels.shape[1], window, window),
            strides=(pixels.shape[1], stride, stride),
            baselines=0.0,
            perturbations_per_eval=OCCLUSION_BATCH,
        )

    @contextmanager
    def _probe_last_stage(self, probe: _GridProbe, *, method: str = "Grad-CAM") -> Iterator[None]:
        if self.gradcam_stage is None:
            raise ExplainError(
                f"{method} needs a known backbone; {type(self.model).__name__} has none (use ig or occlusion)"
            )

        def hook(_module: torch.nn.Module, _inputs: Any, output: Any) -> Any:
            grid, back = _to_grid(_first(output))
            return _replace_first(output, back(probe(grid)))

        handle = self.gradcam_stage[1].register_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the model copy between explanations: one in progress has Captum hooks on it."""
        with self._lock:
            yield

    def probabilities(self, pixels: torch.Tensor) -> torch.Tensor:
        """Softmax over the labels for a batch of model inputs (B, 3, H, W): (B, labels)."""
        with self.exclusive(), torch.no_grad():
            return self.forward(pixels.contiguous()).softmax(-1)

    # -- one image, as the UI and CLI ask -------------------------------------------------------

    def explain(
        self,
        image: Image.Image,
        *,
        method: str = "gradcam",
        target: str | None = None,
        steps: int = IG_STEPS,
        baseline: str = "black",
    ) -> Explanation:
        """Explain the prediction for `target` (default: the top-1 label) on a decoded RGB image."""
        if method not in METHODS:
            raise ExplainError(f"unknown explanation method {method!r}; choose one of {', '.join(METHODS)}")
        if baseline not in BASELINES:
            raise ExplainError(f"unknown baseline {baseline!r}; choose one of {', '.join(BASELINES)}")
        if not 1 <= steps <= 512:
            raise ExplainError(f"steps must be between 1 and 512, got {steps}")
        with self._lock:
            started = time.perf_counter()
            pixels = self.classifier.preprocess([image]).contiguous()
            with torch.no_grad():
                probabilities = self.forward(pixels).softmax(-1)[0]
            index = int(probabilities.argmax()) if target is None else self.classifier.labels.id_of(target)
            heatmap, delta, settings = self._heatmap(method, image, pixels, index, steps, baseline)
            return Explanation(
                method=method,
                target=self.classifier.labels.names[index],
                target_index=index,
                score=float(probabilities[index]),
                heatmap=heatmap,
                input_box=self.input_box(image),
                seconds=time.perf_counter() - started,
                convergence_delta=delta,
                settings=settings,
            )

    def _heatmap(
        self, method: str, image: Image.Image, pixels: torch.Tensor, index: int, steps: int, baseline: str
    ) -> tuple[np.ndarray, float | None, str]:
        if method == "gradcam":
            return _normalize(self.gradcam(pixels, [index])[0]), None, f"stage {self.gradcam_stage[0]}"
        if method == "gradcam++":
            heatmap = self.gradcam_plus_plus(pixels, [index])[0]
            return _normalize(heatmap), None, f"stage {self.gradcam_stage[0]}"
        if method == "ig":
            attributions, delta = self.integrated_gradients(pixels, [index], self.baseline(image, baseline), steps=steps)
            magnitude = attributions[0].abs().sum(0)
            # A few extreme pixels would wash out the map; clip at the 99th percentile.
            magnitude = magnitude.clamp(max=torch.quantile(magnitude.flatten(), 0.99))
            return _normalize(magnitude), float(delta[0]), f"{steps} steps, {baseline} baseline"
        window, stride = occlusion_geometry(tuple(pixels.shape[-2:]))
        drop = self.occlusion(pixels, [index], window=window, stride=stride)[0].sum(0)
        return _normalize(drop), None, f"{window} px window, stride {stride}"

    def baseline(self, image: Image.Image, kind: str) -> torch.Tensor:
        """The IG starting point, in model input space: a black image, a heavy blur, or the mean (zeros)."""
        if kind == "black":
            return self.classifier.preprocess([Image.new("RGB", image.size)]).contiguous()
        if kind == "blur":
            radius = max(image.size) / 20
            return self.classifier.preprocess([image.filter(ImageFilter.GaussianBlur(radius))]).contiguous()
        return torch.zeros_like(self.classifier.preprocess([image]))

    def input_box(self, image: Image.Image) -> tuple[float, float, float, float]:
        crop_box = getattr(self.classifier.preprocess, "crop_box", None)
        return crop_box(*image.size) if crop_box else (0.0, 0.0, float(image.width), float(image.height))

    def stage_maps(self, image: Image.Image) -> list[StageMap]:
        """Channel-mean activation of every stage for one image, shallow to deep."""
        if not self.stages:
            raise ExplainError(f"{type(self.model).__name__} has no known stages to show")
        captured: list[torch.Tensor] = []
        handles = [
            module.register_forward_hook(lambda _m, _i, output: captured.append(_to_grid(_first(output))[0]))
            for _, module in self.stages
        ]
        try:
            with self._lock, torch.no_grad():
                self.forward(self.classifier.preprocess([image]).contiguous())
        finally:
            for handle in handles:
                handle.remove()
        return [
            StageMap(name=name, channels=grid.shape[1], heatmap=_normalize_signed(grid[0].mean(0)))
            for (name, _), grid in zip(self.stages, captured)
        ]


def _normalize_signed(values: torch.Tensor) -> np.ndarray:
    """Min-max scaling: stage activations can be negative, and their contrast is what matters."""
    values = values.detach().float()
    low, high = values.min(), values.max()
    scaled = (values - low) / (high - low) if high > low else torch.zeros_like(values)
    return scaled.numpy().astype(np.float32)


def model_sized(image: Image.Image, min_side: int) -> Image.Image:
    """`image` reduced by a whole factor that keeps its shorter side at least `min_side`, as a JPEG
    draft decode is: attributions, baselines and crops of a large PNG then cost the model's size,
    not the photo's (docs/speed.md, "Memory per request")."""
    factor = min(image.size) // min_side
    return image.reduce(factor) if factor >= 2 else image


def occlusion_geometry(input_size: tuple[int, int]) -> tuple[int, int]:
    """Window and stride for Occlusion: a window of 3/14 of the input, overlapping by a third.

    At 224 px: a 48 px window with stride 32, so 7 x 7 = 49 occluded copies. One forward pass of
    EfficientNet-Lite0 costs about 20-35 ms per image on 2 CPU cores whatever the batch, so the
    number of copies sets the time: 49 stay under 3 s, while a 32/16 grid (169 copies) took 5 s.
    """
    window = max(4, min(input_size) * 3 // 14)
    return window, max(2, window * 2 // 3)
