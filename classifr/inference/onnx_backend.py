"""Serving through ONNX Runtime: a Classifier whose forward pass runs a verified ONNX export.

A version folder may hold `model.onnx` and `onnx_export.json` (written by `classifr.inference.onnx_export`):
input `pixel_values` (float32 NCHW, dynamic batch), outputs `logits` [batch, L] and `features`
[batch, D] (the classifier head's input). Only an export whose record says `"verified": true` is
served. `load_classifier` picks the backend:

- "torch": PyTorch, as `Classifier.load`;
- "onnx": ONNX Runtime, or ModelLoadError naming why the version has no verified export;
- "auto" (the default): ONNX Runtime when the export is verified, else PyTorch (logged with why).

On this project's 2-core machine EfficientNet-Lite0 at 224 px runs its forward pass in about
10 ms on ONNX Runtime against about 25 ms in PyTorch eager mode (both measured on a quiet
machine; PyTorch's two OpenMP threads also degrade far worse when anything else wants a core),
with the same top-1 on every clothing-small test photo (benchmarks/serving.py,
tests/test_onnx_backend.py).
The PyTorch model stays loaded beside the session: explanations (Captum needs gradients) and
training use it, and `predict`, `predict_with_features` and the rest of `Classifier` run unchanged
on top of the ONNX `logits` / `features_and_logits`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from classifr.core.config import BACKENDS
from classifr.core.errors import ClassifrError, ConfigError, ModelLoadError
from classifr.inference.classifier import Classifier
from classifr.inference.onnx_export import EXPORT_FILE, INPUT_NAME, ONNX_FILE, OUTPUT_NAMES, read_export  # noqa: F401 (ONNX_FILE re-exported)
from classifr.core.preprocessing import FastPreprocessor
from classifr.versions.folder import verify_version_files

logger = logging.getLogger(__name__)



def create_session(model: Path | bytes, *, num_threads: int, allow_spinning: bool = False) -> Any:
    """An onnxruntime InferenceSession on the CPU, tuned for a small box (2-8 cores) serving one model.

    - intra_op_num_threads = num_threads: the app batches queued requests into one call, so one
      call may use every core; more threads than cores only adds contention.
    - inter_op_num_threads = 1 and ORT_SEQUENTIAL: a CNN is a chain of ops, there is nothing to run
      side by side, and a second pool would only compete with the first.
    - allow_spinning = 0: by default idle pool threads busy-wait for the next op. On 2 cores they
      then steal the CPU that other requests' JPEG decode and resize, Gradio's own work and
      PyTorch's threads (explanations) need. Measured (benchmarks/serving.py): spinning makes one
      forward alone about 1 ms faster (9.1 vs 9.8 ms), but two threads calling `predict` at once
      did 64-70 predictions/s with it against 83-89 without.
    - ORT_ENABLE_ALL: constant folding, Conv+BN+activation fusion and the NCHWc layout transforms.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, int(num_threads))
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
    options.log_severity_level = 3  # errors only: its graph-optimisation notes are not for users
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])


class OnnxClassifier(Classifier):
    """A Classifier whose `logits` and `features_and_logits` run an onnxruntime session.

    Labels, preprocessing and the PyTorch model (for explanations and training) are the same as
    the PyTorch Classifier's; only the forward pass of predictions moves to ONNX Runtime. An
    InferenceSession may be run from many threads at once, so one instance still serves them all.
    """

    backend = "onnx"

    def __init__(
        self,
        model: torch.nn.Module,
        preprocessor: Any,
        *,
        version: str,
        session: Any,
        input_name: str = INPUT_NAME,
    ) -> None:
        super().__init__(model, preprocessor, version=version)
        self.session = session
        self._input = input_name
        if isinstance(preprocessor, FastPreprocessor):
            std = np.asarray(preprocessor.std, dtype=np.float32).reshape(3, 1, 1)
            mean = np.asarray(preprocessor.mean, dtype=np.float32).reshape(3, 1, 1)
            self._scale_and_offset = (np.float32(preprocessor.rescale_factor) / std, -mean / std)
        inputs = [i.name for i in session.get_inputs()]
        outputs = {o.name: o for o in session.get_outputs()}
        if input_name not in inputs:
            raise ModelLoadError(f"the ONNX graph of {version} has no input {input_name!r} (it has {inputs})")
        missing = [name for name in OUTPUT_NAMES if name not in outputs]
        if missing:
            raise ModelLoadError(f"the ONNX graph of {version} has no output {missing[0]!r} (it has {sorted(outputs)})")
        num_labels = outputs["logits"].shape[-1]
        if isinstance(num_labels, int) and num_labels != len(self.labels):
            # A stale export next to newer weights: never serve labels from one model and scores from another.
            raise ModelLoadError(f"the ONNX graph of {version} has {num_labels} outputs but the model has {len(self.labels)} labels")

    def pixel_array(self, images: Sequence[Image.Image]) -> np.ndarray:
        """The session's input for `images`: C-contiguous NCHW float32, made without PyTorch.

        For the fast preprocessor (every known processor type): the same resize, then one pass
        from the uint8 (N, H, W, 3) stack into a new NCHW float32 array (x * scale) and one in-place
        add (+ offset); about 0.13 ms for a 224 px image, next to 1.8 ms for the resize.
        PyTorch's normalisation (`addcmul`, then a contiguous copy) costs as little alone, but it
        runs on PyTorch's own OpenMP threads, which then compete with onnxruntime's: measured on
        2 cores, preprocess + forward took 35 ms that way against 17 ms in numpy (the forward
        alone: 17 ms). Other preprocessors: their tensor, made contiguous (one copy).
        """
        preprocess = self.preprocess
        if not isinstance(preprocess, FastPreprocessor):
            return np.ascontiguousarray(preprocess(images).numpy(), dtype=np.float32)
        scale, offset = self._scale_and_offset
        pixels = np.stack([preprocess.resize(image) for image in images])  # (N, H, W, 3) uint8
        out = np.empty((pixels.shape[0], 3, pixels.shape[1], pixels.shape[2]), dtype=np.float32)
        np.multiply(pixels.transpose(0, 3, 1, 2), scale, out=out)  # the layout change rides on this pass
        out += offset
        return out

    def _run(self, images: Sequence[Image.Image], outputs: list[str]) -> list[np.ndarray]:
        return self.session.run(outputs, {self._input: self.pixel_array(images)})

    def logits(self, images: Sequence[Image.Image]) -> torch.Tensor:
        (logits,) = self._run(images, ["logits"])
        return torch.from_numpy(logits)  # no copy

    def features_and_logits(self, images: Sequence[Image.Image]) -> tuple[torch.Tensor, torch.Tensor]:
        logits, features = self._run(images, list(OUTPUT_NAMES))
        return torch.from_numpy(features).float().reshape(len(images), -1), torch.from_numpy(logits).float()


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    return backend


def verified_export(source: str | Path) -> tuple[Path | None, str | None, str]:
    """(graph path, input name, "") for a servable export, else (None, None, why not).

    A servable export: `onnx_export.json` is readable, says `"verified": true`, names the inputs
    and outputs this backend runs, and the graph it names exists in the same folder
    (`classifr.inference.onnx_export.read_export` checks all of it).
    """
    folder = Path(source)
    if not folder.is_dir():
        return None, None, f"{str(source)!r} is not a local folder (no ONNX export is looked for on the Hub)"
    export = read_export(folder)
    if export is None:
        return None, None, f"it has no ONNX export ({EXPORT_FILE} is missing)"
    if not export.verified:
        return None, None, f"its ONNX export is not verified: {export.reason or 'no reason recorded'}"
    return folder / export.file, export.input, ""


def load_classifier(
    source: str | Path,
    *,
    version: str,
    backend: str = "auto",
    num_threads: int,
    revision: str | None = None,
) -> Classifier:
    """Load a version (a checkpoint folder, or a Hub id for CLASSIFR_MODEL) on the chosen backend.

    "auto" serves a verified ONNX export through ONNX Runtime and anything else through PyTorch;
    "onnx" insists (ModelLoadError with the reason when the version has no verified export or
    its graph does not load); "torch" never looks for an export. A local folder's checksums are
    checked first (CorruptVersionError naming the damaged file; classifr.versions.folder).
    """
    check_backend(backend)
    if Path(source).is_dir():
        verify_version_files(Path(source), name=version)
    if backend == "onnx":
        graph, _, why_not = verified_export(source)
        if graph is None:
            raise ModelLoadError(f"cannot serve {version} with ONNX Runtime: {why_not}")  # before the slow load
    classifier = Classifier.load(source, version=version, revision=revision)
    return on_backend(classifier, source, backend=backend, num_threads=num_threads)


def on_backend(classifier: Classifier, source: str | Path, *, backend: str, num_threads: int) -> Classifier:
    """A loaded PyTorch Classifier served on `backend` (see load_classifier): itself, or an OnnxClassifier
    sharing its model when `source` holds a verified export."""
    version = classifier.version
    if backend == "torch":
        logger.info("%s serves through PyTorch (backend set to torch)", version)
        return classifier
    graph, input_name, why_not = verified_export(source)
    if graph is None:
        return _no_onnx(classifier, backend, why_not)
    started = time.perf_counter()
    try:
        session = create_session(graph, num_threads=num_threads)
        # Shares the loaded model and preprocessor; the PyTorch Classifier itself is dropped (its head
        # probe stays on the model but only fires when PyTorch runs it, never on this serving path).
        onnx = OnnxClassifier(
            classifier.model, classifier.preprocess, version=version, session=session, input_name=input_name
        )
    except ClassifrError as err:
        return _no_onnx(classifier, backend, str(err))
    except Exception as err:  # noqa: BLE001 - onnxruntime raises its own types for a corrupt or unsupported graph
        return _no_onnx(classifier, backend, f"its ONNX graph does not load: {type(err).__name__}: {_first_line(err)}")
    logger.info("%s serves through ONNX Runtime (%s, %d threads; session in %.2f s)",
                version, graph.name, num_threads, time.perf_counter() - started)
    return onnx


def _no_onnx(classifier: Classifier, backend: str, why_not: str) -> Classifier:
    if backend == "onnx":
        raise ModelLoadError(f"cannot serve {classifier.version} with ONNX Runtime: {why_not}")
    logger.info("%s serves through PyTorch: %s", classifier.version, why_not)
    return classifier


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    line = text.splitlines()[0] if text else type(err).__name__
    return line if len(line) <= 300 else line[:297] + "..."
