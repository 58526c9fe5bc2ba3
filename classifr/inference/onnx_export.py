"""Export a model version as an ONNX graph, verified against PyTorch before it is kept.

A version folder may hold, beside its weights:

- `model.onnx`: input `pixel_values` (float32, NCHW, dynamic batch, height and width fixed to the
  model's input size from its preprocessor), outputs `logits` [batch, num_labels] and `features`
  [batch, D], the input of the classifier head (what `Classifier.features_and_logits` returns).
- `model.int8.onnx` (optional): the same graph with dynamically quantized int8 weights (QInt8) in
  its MatMul/Gemm layers, kept only when its top-1 accuracy on the version's eval split is within
  half a point of float32.
- `onnx_export.json`: what happened, written atomically and only after the graphs are complete:
  `{"format": "onnx", "file": "model.onnx", "verified", "reason", "opset", "input", "outputs",
  "images", "max_abs_diff", "top1_agreement", "exporter", "seconds", "int8"}` (plus
  `max_abs_diff_features`, and `quantized_ops` inside `int8`).

Only a *verified* export may be served: logits within 1e-4 of PyTorch's (features within 1e-3)
and the same top-1 on every verification image, at batch sizes other than the export example's
(so the dynamic batch really works). A failed or disagreeing export is recorded with
`verified: false` and the reason, its graph deleted; the version itself is published all the same
and served by PyTorch. `export_onnx` never raises for an export or verification failure.

Verification images: for a trained version, up to 300 photos of its eval split. Without project
data (the bootstrapped v1, `classifr export` of an older version), `sample_verification_images()`:
scikit-learn's two sample photos (china.jpg, flower.jpg) expanded into a few hundred real-image-
derived inputs: crops at several scales and positions, mirror images and rotations.

Dynamic quantization of convolutions (ConvInteger) runs in onnxruntime but measured ten times
slower than float32 on CPU, so only MatMul/Gemm are quantized: for a convolutional network that is
just the classifier head, for a ViT every projection.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from classifr.inference.classifier import Classifier, classifier_head
from classifr.versions import folder as folder_files

logger = logging.getLogger(__name__)

ONNX_FILE = folder_files.ONNX_FILE
INT8_FILE = "model.int8.onnx"
EXPORT_FILE = folder_files.ONNX_RECORD_FILE
INPUT_NAME = "pixel_values"
OUTPUT_NAMES = ("logits", "features")
OPSET = 17
LOGITS_TOLERANCE = 1e-4  # max |ONNX - PyTorch| over every logit of every verification image
FEATURES_TOLERANCE = 1e-3  # the head's input: larger magnitudes than logits in some models
INT8_MAX_DROP = 0.005  # int8 is kept when its accuracy is at most half a point below float32
QUANTIZED_OPS = ("MatMul", "Gemm")
MAX_VERIFICATION_IMAGES = 300
SAMPLE_IMAGES = 200  # the default size of the sample-photo verification set
_BATCH = 32
_EXAMPLE_BATCH = 2  # the traced example: verification then runs other batch sizes (1, 32, the rest)


@dataclass(frozen=True)
class Int8Variant:
    """The int8 variant's evaluation and whether it was kept (`file` exists only when kept)."""

    file: str
    kept: bool
    accuracy_fp32: float | None
    accuracy_int8: float | None
    reason: str | None
    quantized_ops: tuple[str, ...] = QUANTIZED_OPS

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "quantized_ops": list(self.quantized_ops)}


@dataclass(frozen=True)
class OnnxExport:
    """One version's ONNX export, as `onnx_export.json` records it."""

    verified: bool
    reason: str | None
    images: int
    max_abs_diff: float | None
    top1_agreement: float | None
    exporter: str  # "torchscript" | "dynamo"
    seconds: float
    int8: Int8Variant | None = None
    max_abs_diff_features: float | None = None
    opset: int = OPSET
    file: str = ONNX_FILE
    input: str = INPUT_NAME
    outputs: tuple[str, ...] = OUTPUT_NAMES
    format: str = "onnx"

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "file": self.file,
            "verified": self.verified,
            "reason": self.reason,
            "opset": self.opset,
            "input": self.input,
            "outputs": list(self.outputs),
            "images": self.images,
            "max_abs_diff": self.max_abs_diff,
            "max_abs_diff_features": self.max_abs_diff_features,
            "top1_agreement": self.top1_agreement,
            "exporter": self.exporter,
            "seconds": self.seconds,
            "int8": None if self.int8 is None else self.int8.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OnnxExport:
        """Parse `onnx_export.json`; KeyError/TypeError/ValueError when it is malformed."""
        int8 = data.get("int8")
        return cls(
            verified=data["verified"] is True,  # "yes", 1: not a verified export
            reason=data.get("reason"),
            images=int(data["images"]),
            max_abs_diff=_optional_float(data.get("max_abs_diff")),
            top1_agreement=_optional_float(data.get("top1_agreement")),
            exporter=str(data["exporter"]),
            seconds=float(data["seconds"]),
            int8=None if int8 is None else Int8Variant(
                file=str(int8["file"]), kept=bool(int8["kept"]),
                accuracy_fp32=_optional_float(int8.get("accuracy_fp32")),
                accuracy_int8=_optional_float(int8.get("accuracy_int8")),
                reason=int8.get("reason"), quantized_ops=tuple(int8.get("quantized_ops", QUANTIZED_OPS)),
            ),
            max_abs_diff_features=_optional_float(data.get("max_abs_diff_features")),
            opset=int(data["opset"]),
            file=str(data.get("file", ONNX_FILE)),
            input=str(data.get("input", INPUT_NAME)),
            outputs=tuple(data.get("outputs", OUTPUT_NAMES)),
            format=str(data.get("format", "onnx")),
        )

    def summary(self) -> str:
        """One line for cards and the CLI, e.g. 'verified (max |Δlogit| 5.4e-06 on 200 images)'."""
        if not self.verified:
            return f"not verified, served by PyTorch: {self.reason}"
        text = f"verified (max |Δlogit| {self.max_abs_diff:.1e} on {self.images} images)"
        if self.int8 is not None:
            i8 = self.int8
            accuracies = f"int8 accuracy {_pct(i8.accuracy_int8)} vs float32 {_pct(i8.accuracy_fp32)}"
            text += f"; {accuracies}, int8 " + ("kept" if i8.kept else f"not kept ({i8.reason})")
        return text


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


# --- reading ---------------------------------------------------------------------------------------


def read_export(folder: Path) -> OnnxExport | None:
    """The folder's export record; None when there is none. Unreadable or inconsistent: not verified."""
    path = Path(folder) / EXPORT_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as err:
        return _unreadable(f"{EXPORT_FILE} cannot be read: {err}")
    try:
        data = json.loads(text)
    except ValueError as err:
        return _unreadable(f"{EXPORT_FILE} cannot be read: {_first_line(err)}")
    try:
        export = OnnxExport.from_json(data)
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        return _unreadable(f"{EXPORT_FILE} is malformed: {type(err).__name__}: {err}")
    if not isinstance(export.input, str) or not set(OUTPUT_NAMES) <= set(export.outputs):
        return replace(export, verified=False, reason=f"{EXPORT_FILE} names input {export.input!r} and outputs "
                                                       f"{list(export.outputs)!r}, not {list(OUTPUT_NAMES)}")
    if export.verified and not (Path(folder) / export.file).is_file():
        return replace(export, verified=False, reason=f"verified but {export.file} is missing")
    return export


def verified_onnx_path(folder: Path) -> Path | None:
    """The folder's ONNX graph if it exists and passed verification, else None."""
    export = read_export(folder)
    return Path(folder) / export.file if export is not None and export.verified else None


def _unreadable(reason: str) -> OnnxExport:
    return OnnxExport(verified=False, reason=reason, images=0, max_abs_diff=None, top1_agreement=None,
                      exporter="torchscript", seconds=0.0)


# --- verification images ---------------------------------------------------------------------------


class SampleImages(Sequence):
    """Real-image-derived inputs made on demand from scikit-learn's two sample photos.

    Each photo gives crops at five scales (the whole photo down to 30% of its shorter side) on a
    grid of positions, each crop as it is, mirrored, and rotated (90, 180, 270 degrees and
    +-15 degrees); the list cycles through these variants so any prefix mixes them all.
    """

    def __init__(self, count: int = SAMPLE_IMAGES) -> None:
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        folder = Path(str(resources.files("sklearn.datasets") / "images"))
        self._photos = [folder / "china.jpg", folder / "flower.jpg"]
        self._recipes = _recipes(count)
        self._cache: dict[int, Image.Image] = {}

    def __len__(self) -> int:
        return len(self._recipes)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        photo, scale, position, transform = self._recipes[index]
        return _derive(self._photo(photo), scale, position, transform)

    def _photo(self, index: int) -> Image.Image:
        if index not in self._cache:
            with Image.open(self._photos[index]) as image:
                self._cache[index] = image.convert("RGB")
        return self._cache[index]


_SCALES = (1.0, 0.8, 0.6, 0.45, 0.3)
_TRANSFORMS = ("none", "mirror", "rot90", "rot180", "rot270", "rot15", "rot-15")


def _recipes(count: int) -> list[tuple[int, float, tuple[float, float], str]]:
    grid = [(x, y) for y in (0.0, 0.5, 1.0) for x in (0.0, 0.5, 1.0)]
    base = [(scale, position) for scale in _SCALES for position in (grid if scale < 1.0 else [(0.5, 0.5)])]
    recipes = []
    for i in range(count):
        scale, position = base[(i // 2) % len(base)]
        transform = _TRANSFORMS[(i // 2 + i // (2 * len(base))) % len(_TRANSFORMS)]
        recipes.append((i % 2, scale, position, transform))
    return recipes


def _derive(photo: Image.Image, scale: float, position: tuple[float, float], transform: str) -> Image.Image:
    width, height = photo.size
    side_w, side_h = (width, height) if scale == 1.0 else (round(min(width, height) * scale),) * 2
    left, top = round((width - side_w) * position[0]), round((height - side_h) * position[1])
    crop = photo.crop((left, top, left + side_w, top + side_h))
    if transform == "mirror":
        return crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if transform.startswith("rot"):
        angle = int(transform[3:])
        if angle % 90 == 0:
            return crop.rotate(angle, expand=True)
        return crop.rotate(angle, resample=Image.Resampling.BICUBIC, expand=False)
    return crop


def sample_verification_images(count: int = SAMPLE_IMAGES) -> SampleImages:
    """`count` verification inputs derived from scikit-learn's sample photos (see SampleImages)."""
    return SampleImages(count)


# --- export ----------------------------------------------------------------------------------------


class _LogitsAndFeatures(torch.nn.Module):
    """The model with two outputs: logits and the classifier head's input, flattened per image.

    A forward hook registered for the duration of one forward keeps the head's input, so this
    works for any model whose last layer is a linear head. Not for a model other threads run at
    the same time (their head inputs would land here too): export a freshly loaded Classifier.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.head = classifier_head(model)

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kept: list[torch.Tensor] = []
        handle = self.head.register_forward_hook(lambda _module, inputs, _output: kept.append(inputs[0]))
        try:
            logits = self.model(pixel_values=pixel_values).logits
        finally:
            handle.remove()
        return logits, kept[-1].flatten(1)


def input_size(classifier: Classifier) -> tuple[int, int]:
    """(height, width) of the model input, from a probe through the classifier's own preprocessor."""
    size = getattr(classifier.preprocess, "input_size", None)
    if size is not None:
        return int(size[0]), int(size[1])
    probe = classifier.preprocess([Image.new("RGB", (max(classifier.min_side, 32),) * 2)])
    return int(probe.shape[-2]), int(probe.shape[-1])


def _export_graph(classifier: Classifier, path: Path) -> tuple[str, int]:
    """Write the ONNX graph to `path`; returns the exporter used and the graph's opset.

    Raises whatever the exporter raises.
    """
    module = _LogitsAndFeatures(classifier.model).eval()
    height, width = input_size(classifier)
    example = torch.randn(_EXAMPLE_BATCH, 3, height, width)
    names = dict(input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
        try:
            torch.onnx.export(
                module, (example,), str(path), dynamo=False, opset_version=OPSET,
                dynamic_axes={name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)}, **names,
            )
            exporter = "torchscript"
        except Exception as err:  # noqa: BLE001 - a torch without the TorchScript exporter, or a model it cannot trace
            logger.info("TorchScript ONNX export failed (%s); trying the dynamo exporter", _first_line(err))
            path.unlink(missing_ok=True)
            # The dynamo exporter implements opset 18 and up.
            program = torch.onnx.export(
                module, (example,), dynamo=True, opset_version=max(OPSET, 18), verbose=False,
                dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},), **names,
            )
            program.save(str(path), external_data=False)
            exporter = "dynamo"
    return exporter, _opset_of(path)


def _opset_of(path: Path) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((int(entry.version) for entry in model.opset_import if entry.domain in ("", "ai.onnx")), OPSET)


def _session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def _batches(images: Sequence[Any], size: int, min_side: int) -> Iterator[list[Image.Image]]:
    """Decoded RGB images in batches; unreadable ones are skipped with a warning."""
    from classifr.core.errors import InvalidImageError
    from classifr.core.images import read_image

    batch: list[Image.Image] = []
    for item in images:
        try:
            batch.append(read_image(item, min_side=min_side).image)
        except InvalidImageError as err:
            logger.warning("skipping a verification image: %s", err)
            continue
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _pixels(classifier: Classifier, images: Sequence[Image.Image]) -> np.ndarray:
    return np.ascontiguousarray(classifier.preprocess(images).numpy(), dtype=np.float32)


@dataclass(frozen=True)
class _Verification:
    images: int
    max_abs_diff: float | None
    max_abs_diff_features: float | None
    top1_agreement: float | None
    reason: str | None  # None: passed


def _verify(classifier: Classifier, session: Any, images: Sequence[Any]) -> _Verification:
    """Compare onnxruntime with the served PyTorch path on every image, in batches of 32 (and of 1)."""
    count, agree, max_logit, max_feature = 0, 0, 0.0, 0.0
    first_pixels: np.ndarray | None = None
    first_logits: np.ndarray | None = None
    for batch in _batches(images, _BATCH, classifier.min_side):
        features, logits = classifier.features_and_logits(batch)
        pixels = _pixels(classifier, batch)
        onnx_logits, onnx_features = session.run(list(OUTPUT_NAMES), {INPUT_NAME: pixels})
        if onnx_logits.shape != tuple(logits.shape) or onnx_features.shape != tuple(features.shape):
            return _Verification(count, None, None, None, (
                f"output shapes differ: ONNX logits {onnx_logits.shape} / features {onnx_features.shape}, "
                f"PyTorch {tuple(logits.shape)} / {tuple(features.shape)}"))
        max_logit = max(max_logit, float(np.abs(onnx_logits - logits.numpy()).max()))
        max_feature = max(max_feature, float(np.abs(onnx_features - features.numpy()).max()))
        agree += int((onnx_logits.argmax(-1) == logits.numpy().argmax(-1)).sum())
        count += len(batch)
        if first_pixels is None:
            first_pixels, first_logits = pixels[:1], logits.numpy()[:1]
    if count == 0:
        return _Verification(0, None, None, None, "no readable verification image")
    # Batch size 1 (the export example had 2, verification batches 32 and the remainder).
    single_logits, _ = session.run(list(OUTPUT_NAMES), {INPUT_NAME: first_pixels})
    max_logit = max(max_logit, float(np.abs(single_logits - first_logits).max()))
    agreement = agree / count
    reason = None
    if not max_logit <= LOGITS_TOLERANCE:  # also catches NaN
        reason = f"logits differ from PyTorch by up to {max_logit:.3g} (tolerance {LOGITS_TOLERANCE:g})"
    elif not max_feature <= FEATURES_TOLERANCE:
        reason = f"features differ from PyTorch by up to {max_feature:.3g} (tolerance {FEATURES_TOLERANCE:g})"
    elif agree != count:
        reason = f"top-1 differs from PyTorch on {count - agree} of {count} images"
    return _Verification(count, _finite(max_logit), _finite(max_feature), agreement, reason)


def graph_disagreement(classifier: Classifier, session: Any, images: Sequence[Any]) -> str | None:
    """Why an exported graph (an onnxruntime session) disagrees with `classifier`'s PyTorch weights on
    `images`, or None when its logits and features are within the export's tolerances.

    The same comparison as the export's verification, less the top-1 rule: on a few synthetic
    probe images two labels may tie within the tolerance, and which one wins says nothing then.
    """
    result = _verify(classifier, session, images)
    within = (
        result.max_abs_diff is not None and result.max_abs_diff <= LOGITS_TOLERANCE
        and result.max_abs_diff_features is not None and result.max_abs_diff_features <= FEATURES_TOLERANCE
    )
    return None if within else (result.reason or "its outputs are not finite")


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


# --- int8 ------------------------------------------------------------------------------------------


def int8_decision(accuracy_fp32: float, accuracy_int8: float) -> tuple[bool, str | None]:
    """Keep int8 when it loses at most half a point of accuracy; the reason when it does not."""
    if accuracy_int8 >= accuracy_fp32 - INT8_MAX_DROP - 1e-9:
        return True, None
    return False, (
        f"int8 accuracy {accuracy_int8:.1%} is more than {INT8_MAX_DROP * 100:g} point below float32 {accuracy_fp32:.1%}"
    )


def _accuracies(classifier: Classifier, sessions: Sequence[Any], images: Sequence[Any], labels: Sequence[str]) -> list[float]:
    """Top-1 accuracy of each onnxruntime session, decoding every image once; an unreadable image counts as wrong."""
    from classifr.core.errors import InvalidImageError
    from classifr.core.images import read_image

    names = classifier.labels.names
    correct = [0] * len(sessions)
    for start in range(0, len(images), _BATCH):
        batch, expected = [], []
        for item, label in zip(images[start : start + _BATCH], labels[start : start + _BATCH]):
            try:
                batch.append(read_image(item, min_side=classifier.min_side).image)
                expected.append(label)
            except InvalidImageError as err:
                logger.warning("int8 evaluation: %s", err)
        if not batch:
            continue
        pixels = _pixels(classifier, batch)
        for k, session in enumerate(sessions):
            (logits,) = session.run(["logits"], {INPUT_NAME: pixels})
            correct[k] += sum(names[int(i)] == label for i, label in zip(logits.argmax(-1), expected))
    return [c / len(images) for c in correct]


class _DropQuantizerAdvice(logging.Filter):
    """onnxruntime's quantizer logs advice and shape-inference notes on the root logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "onnxruntime" not in record.pathname.replace(os.sep, "/")


def _quantize(source: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    drop = _DropQuantizerAdvice()
    logging.getLogger().addFilter(drop)
    try:
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, op_types_to_quantize=list(QUANTIZED_OPS))
    finally:
        logging.getLogger().removeFilter(drop)


def _int8_variant(
    classifier: Classifier, folder: Path, fp32_session: Any, eval_set: tuple[Sequence, Sequence[str]]
) -> Int8Variant:
    images, labels = eval_set
    target = folder / INT8_FILE
    partial = folder / (INT8_FILE + ".partial")
    accuracy_fp32: float | None = None
    accuracy_int8: float | None = None
    try:
        if len(images) != len(labels) or not images:
            raise ValueError(f"the eval set needs as many labels as images (got {len(images)} images, {len(labels)} labels)")
        _quantize(folder / ONNX_FILE, partial)
        accuracy_fp32, accuracy_int8 = _accuracies(classifier, [fp32_session, _session(partial)], images, labels)
        kept, reason = int8_decision(accuracy_fp32, accuracy_int8)
    except Exception as err:  # noqa: BLE001 - a quantizer or runtime failure only costs the int8 variant
        kept, reason = False, f"int8 quantization failed: {type(err).__name__}: {_first_line(err)}"
    if kept:
        os.replace(partial, target)
    else:
        partial.unlink(missing_ok=True)
        target.unlink(missing_ok=True)
    logger.info("int8: accuracy %s (float32 %s), %s", _pct(accuracy_int8), _pct(accuracy_fp32), "kept" if kept else reason)
    return Int8Variant(file=INT8_FILE, kept=kept, accuracy_fp32=accuracy_fp32, accuracy_int8=accuracy_int8, reason=reason)


# --- the entry points ------------------------------------------------------------------------------


def export_onnx(
    classifier: Classifier,
    folder: Path,
    images: Sequence[Image.Image | str | os.PathLike],
    *,
    eval_set: tuple[Sequence, list[str]] | None = None,
    quantize: bool = True,
) -> OnnxExport:
    """Export `classifier` into `folder` (model.onnx, onnx_export.json), verified on `images`.

    `eval_set` (images, reference labels) decides whether the int8 variant is kept; without it
    (or with quantize=False) there is none. Never raises for an export or verification failure:
    the record says `verified: false` and why, and the unverified graph is deleted. Export a
    Classifier no other thread is running (a freshly loaded one): the export hooks its head.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no such folder to export into: {folder}")
    if not isinstance(classifier, Classifier):
        raise TypeError(f"export_onnx needs a Classifier, got {type(classifier).__name__}")
    started = time.perf_counter()
    onnx_path, partial = folder / ONNX_FILE, folder / (ONNX_FILE + ".partial")
    (folder / EXPORT_FILE).unlink(missing_ok=True)  # a stale record must never vouch for a new graph
    for stale in (onnx_path, folder / INT8_FILE):
        stale.unlink(missing_ok=True)
    exporter, opset, verification, int8, stage = "torchscript", OPSET, None, None, "export"
    try:
        exporter, opset = _export_graph(classifier, partial)
        os.replace(partial, onnx_path)
        stage = "verification"
        export_seconds = time.perf_counter() - started
        session = _session(onnx_path)
        verification = _verify(classifier, session, images)
        logger.info("ONNX export of %s: %.1f s export, %.1f s verification on %d images", classifier.version,
                    export_seconds, time.perf_counter() - started - export_seconds, verification.images)
        if verification.reason is None and quantize and eval_set is not None:
            int8 = _int8_variant(classifier, folder, session, eval_set)
    except Exception as err:  # noqa: BLE001 - any exporter or runtime failure means "not verified", never a crash
        reason = f"{stage} failed: {type(err).__name__}: {_first_line(err)}"
        if verification is None:
            verification = _Verification(0, None, None, None, reason)
        else:
            verification = replace(verification, reason=reason)
    finally:
        partial.unlink(missing_ok=True)
    verified = verification.reason is None
    if not verified:
        onnx_path.unlink(missing_ok=True)
        logger.warning("ONNX export of %s not verified, it will be served by PyTorch: %s",
                       classifier.version, verification.reason)
    result = OnnxExport(
        verified=verified, reason=verification.reason, images=verification.images,
        max_abs_diff=verification.max_abs_diff, max_abs_diff_features=verification.max_abs_diff_features,
        top1_agreement=verification.top1_agreement, exporter=exporter, opset=opset,
        seconds=round(time.perf_counter() - started, 3), int8=int8,
    )
    _write_json_atomically(folder / EXPORT_FILE, result.to_json())
    return result


def export_version(
    folder: Path,
    *,
    version: str,
    images: Sequence[Any] | None = None,
    eval_set: tuple[Sequence, list[str]] | None = None,
    quantize: bool = True,
) -> OnnxExport:
    """Load the checkpoint in `folder` as the server would and export it there; never raises for a failure.

    `images` default to the sample-photo set. A checkpoint that does not load is recorded as a
    failed export too, so a version is always published with a record of why it is not ONNX.
    """
    from classifr.core.errors import ClassifrError

    folder = Path(folder)
    try:
        classifier = Classifier.load(folder, version=version)
    except (ClassifrError, OSError, ValueError, RuntimeError) as err:
        result = _unreadable(f"export failed: cannot load the checkpoint: {_first_line(err)}")
        _write_json_atomically(folder / EXPORT_FILE, result.to_json())
        logger.warning("ONNX export of %s failed: %s", version, result.reason)
        return result
    if images is None:
        images = sample_verification_images()
    return export_onnx(classifier, folder, images, eval_set=eval_set, quantize=quantize)


def copy_verified(folder: Path, out: Path) -> Path:
    """Copy the folder's verified graph to `out` (complete or not at all); FileNotFoundError without one."""
    source = verified_onnx_path(folder)
    if source is None:
        raise FileNotFoundError(f"no verified ONNX export in {folder}")
    out = Path(out)
    with tempfile.NamedTemporaryFile(dir=out.parent, prefix=f".{out.name}.", delete=False) as tmp:
        partial = Path(tmp.name)
    try:
        shutil.copyfile(source, partial)
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    return out


def _write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    partial = path.with_name(f".{path.name}.partial")
    with open(partial, "w", encoding="utf-8") as file:
        json.dump(data, file, indent=2, allow_nan=False)
        file.flush()
        os.fsync(file.fileno())
    os.replace(partial, path)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    line = text.splitlines()[0] if text else type(err).__name__
    return line if len(line) <= 300 else line[:297] + "..."
