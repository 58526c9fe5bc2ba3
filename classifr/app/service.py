"""ClassifrService: the one API that the UI and the CLI call.

It owns the registry and the loaded model versions, decodes images through `classifr.core.images`, and
returns plain results that carry the model version. It imports no UI code. One instance is built
at start-up and shared by all requests; it keeps no per-user state, and the only mutable state
(which loaded version serves) is swapped under a lock.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from PIL import Image

from classifr.core.config import Settings
from classifr.data.dataset import AddResult, Category, Example, Feedback, ProjectDataset
from classifr.core.errors import ClassifrError, InvalidImageError, VersionNotFoundError
from classifr.inference.explain import IG_STEPS, Explainer, Explanation, StageMap
from classifr.core.images import ImageLimits, LoadedImage, read_image, stored_copy
from classifr.inference.classifier import Classifier, Prediction
from classifr.monitoring.log import LoggedPrediction, PredictionLog
from classifr.inference.onnx_backend import load_classifier
from classifr.monitoring.prometheus import ServingMetrics
from classifr.inference.overlay import fit, render, stage_grid
from classifr.versions.registry import ModelRegistry, VersionInfo, open_local_registry, open_registry  # noqa: F401 (re-exported)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PredictionResult:
    """The outcome for one input image: predictions, or the reason it could not be classified."""

    image: str
    version: str
    predictions: tuple[Prediction, ...] = ()
    error: str | None = None
    original_size: tuple[int, int] | None = None
    timings_ms: dict[str, float] = field(default_factory=dict, compare=False)
    id: str | None = None  # the prediction log's id, which a later correction refers to
    variant: str = "production"  # "candidate" when the canary share routed it to the candidate version

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        if self.error is not None:
            return {"image": self.image, "error": self.error}
        return {
            "image": self.image,
            "version": self.version,
            "predictions": [p.to_json() for p in self.predictions],
            "original_size": list(self.original_size) if self.original_size else None,
            "id": self.id,
            "variant": self.variant,
        }


@dataclass(frozen=True)
class ExplainResult:
    """A rendered explanation (or stage grid) of one image by one model version."""

    image: str
    version: str
    picture: Image.Image
    explanation: Explanation | None = None
    stages: tuple[StageMap, ...] = ()

    def to_json(self) -> dict[str, Any]:
        details = self.explanation.to_json() if self.explanation else {"method": "layers"}
        return {"image": self.image, "version": self.version, "size": list(self.picture.size), **details}


class ClassifrService:
    """Predictions and model versions for one Classifr project (one CLASSIFR_HOME)."""

    def __init__(
        self,
        settings: Settings,
        *,
        registry: ModelRegistry | None,
        classifier: Classifier,
        dataset: ProjectDataset | None = None,
        prediction_log: PredictionLog | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.limits = ImageLimits(max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels)
        self.dataset = dataset or ProjectDataset(settings.dataset_dir, limits=self.limits)
        self.sync: Any = None  # a classifr.data.hub_sync.DatasetSync when CLASSIFR_DATASET_REPO is set
        self.prediction_log = prediction_log
        self.hf_api: Any = None  # the injected Hub client (tests), else huggingface_hub's default
        self.metrics = ServingMetrics()
        self._lock = threading.Lock()
        self._classifier = classifier
        self._candidate: Classifier | None = None  # served to `canary_share` of requests when set
        self._canary_share = settings.canary_share
        self._draw = random.Random()
        self._explainers: dict[str, Explainer] = {}
        self._publish_serving()

    @classmethod
    def create(cls, settings: Settings, *, hf_api: Any = None) -> ClassifrService:
        """Open the project: registry (building v1 if empty) and the serving model, or CLASSIFR_MODEL,
        the project dataset, its Hub sync when CLASSIFR_DATASET_REPO is set, the prediction log,
        and the candidate version when CLASSIFR_CANARY_SHARE is above 0."""
        log = open_prediction_log(settings)
        if settings.model:
            classifier = load_classifier(
                settings.model, version=settings.model, revision=settings.model_revision,
                backend=settings.backend, num_threads=settings.num_threads,
            )
            service = cls(settings, registry=None, classifier=classifier, prediction_log=log)
        else:
            registry = open_registry(settings, hf_api=hf_api)
            version = registry.resolve("production")
            classifier = load_classifier(
                registry.local_path(version), version=version, backend=settings.backend, num_threads=settings.num_threads
            )
            service = cls(settings, registry=registry, classifier=classifier, prediction_log=log)
            service.refresh()  # loads the canary's candidate, if any
        from classifr.data.hub_sync import open_sync

        service.hf_api = hf_api
        service.sync = open_sync(settings, service.dataset, hf_api=hf_api, known=service.known_labels)
        return service

    def close(self) -> None:
        """Push what the dataset sync has not pushed yet, write what the prediction log holds, stop both."""
        if self.sync is not None:
            self.sync.stop()
            self.sync = None
        if self.prediction_log is not None:
            self.prediction_log.close()

    @property
    def classifier(self) -> Classifier:
        with self._lock:
            return self._classifier

    def _serving(self) -> tuple[Classifier, Classifier | None, float]:
        with self._lock:
            return self._classifier, self._candidate, self._canary_share

    @property
    def candidate_version(self) -> str | None:
        """The version the canary serves to `canary_share` of requests, or None when there is no canary."""
        with self._lock:
            return self._candidate.version if self._candidate is not None and self._canary_share > 0 else None

    @property
    def canary_share(self) -> float:
        with self._lock:
            return self._canary_share

    def set_canary_share(self, share: float) -> float:
        """Serve `share` (0 to 1) of predictions with the `candidate` version; 0 turns the canary off."""
        if not isinstance(share, (int, float)) or not 0.0 <= float(share) <= 1.0:
            raise ClassifrError(f"the canary share must be between 0 and 1, got {share!r}")
        with self._lock:
            self._canary_share = float(share)
        self.refresh()
        logger.info("canary share now %.0f%%", share * 100)
        return float(share)

    @property
    def serving_version(self) -> str:
        return self.classifier.version

    @property
    def serving_backend(self) -> str:
        """What runs the serving version's predictions: "onnx" (ONNX Runtime) or "torch"."""
        return self.classifier.backend

    def predict(self, source: Any, *, top_k: int | None = None, name: str | None = None) -> PredictionResult:
        """Classify one image; a bad image raises InvalidImageError (a ValueError) with a readable message."""
        result = self.predict_batch([source], top_k=top_k, names=[name])[0]
        if result.error is not None:
            raise InvalidImageError(result.error)
        return result

    def predict_batch(
        self,
        sources: Sequence[Any],
        *,
        top_k: int | None = None,
        names: Sequence[str | None] | None = None,
        origin: str = "cli",
    ) -> list[PredictionResult]:
        """Classify many images in one forward pass per serving version (production, and the canary's
        candidate); an unreadable image gets an error result, not an exception.

        `origin` ("ui", "api" or "cli") is recorded in the prediction log and the metrics.
        """
        started = time.perf_counter()
        top_k = self.settings.top_k if top_k is None else top_k
        names = list(names) if names is not None else [None] * len(sources)
        if len(names) != len(sources):
            raise ValueError(f"got {len(sources)} images but {len(names)} names")
        production, candidate, share = self._serving()  # fixed for the whole batch, even if a promote lands
        min_side = max(production.min_side, candidate.min_side if candidate else 0)
        decoded: list[LoadedImage | ClassifrError] = []
        for source, name in zip(sources, names):
            try:
                decoded.append(read_image(source, limits=self.limits, min_side=min_side, name=name))
            except ClassifrError as err:
                decoded.append(err)
                self.metrics.observe_error(source=origin)
        decoded_at = time.perf_counter()
        routed = {i: self._route(candidate, share) for i, item in enumerate(decoded) if isinstance(item, LoadedImage)}
        ranked: dict[int, tuple[Classifier, str, list[Prediction], Any]] = {}
        for variant, classifier in (("production", production), ("candidate", candidate)):
            chosen = [i for i, v in routed.items() if v == variant]
            if not chosen:
                continue
            rows, features = classifier.predict_with_features(
                [decoded[i].image for i in chosen], top_k=top_k, features=self.prediction_log is not None
            )
            for n, i in enumerate(chosen):
                ranked[i] = (classifier, variant, rows[n], None if features is None else features[n])
        finished = time.perf_counter()
        timings = {"decode": (decoded_at - started) * 1000, "model": (finished - decoded_at) * 1000}
        results = []
        for i, (item, source, name) in enumerate(zip(decoded, sources, names)):
            label = name or _describe(source)
            if isinstance(item, ClassifrError):
                results.append(PredictionResult(image=label, version=production.version, error=str(item)))
                continue
            classifier, variant, predictions, embedding = ranked[i]
            result = PredictionResult(
                image=label, version=classifier.version, predictions=tuple(predictions), original_size=item.original_size,
                timings_ms=timings, id=uuid.uuid4().hex, variant=variant,
            )
            self._record(result, item, embedding, latency_s=finished - started, origin=origin)
            results.append(result)
        return results

    def _route(self, candidate: Classifier | None, share: float) -> str:
        return "candidate" if candidate is not None and self._draw.random() < share else "production"

    def _record(self, result: PredictionResult, item: LoadedImage, embedding: Any, *, latency_s: float, origin: str) -> None:
        """Count the prediction for /metrics and queue it for the prediction log (written off this thread)."""
        top = result.predictions[0]
        self.metrics.observe_prediction(version=result.version, label=top.label, latency_s=latency_s, source=origin)
        if self.prediction_log is None:
            return
        self.prediction_log.log(
            LoggedPrediction(
                id=result.id, time=time.time(), version=result.version, variant=result.variant, source=origin,
                labels=tuple(p.label for p in result.predictions), scores=tuple(p.score for p in result.predictions),
                latency_ms=latency_s * 1000, image_sha256=lambda: item.sha256,  # hashed on the writer's thread
                width=item.original_size[0], height=item.original_size[1], nbytes=item.num_bytes,
                embedding=embedding, thumbnail=(lambda: stored_copy(item)) if self.settings.store_images else None,
            )
        )
        self.metrics.log_dropped.set(self.prediction_log.dropped + self.prediction_log.failed)

    def explain(
        self,
        source: Any,
        *,
        method: str = "gradcam",
        target: str | None = None,
        view: str = "overlay",
        steps: int = IG_STEPS,
        baseline: str = "black",
        max_side: int | None = None,
        name: str | None = None,
    ) -> ExplainResult:
        """Explain the serving model's decision on one image, rendered over the photo.

        The overlay is as large as the photo (or `max_side`, for display); the attribution itself
        runs on the model's input size, from a decode as small as the model allows.
        """
        classifier = self.classifier
        decoded = read_image(source, limits=self.limits, min_side=classifier.min_side, name=name)
        explanation = self._explainer(classifier).explain(
            decoded.image, method=method, target=target, steps=steps, baseline=baseline
        )
        photo = self._photo(decoded, source, max_side, name)
        picture = fit(render(photo, explanation, decoded_size=decoded.image.size, view=view), max_side)
        return ExplainResult(image=decoded.name, version=classifier.version, picture=picture, explanation=explanation)

    def explain_layers(self, source: Any, *, name: str | None = None) -> ExplainResult:
        """How each stage of the backbone responds to the image, as one grid picture."""
        classifier = self.classifier
        decoded = read_image(source, limits=self.limits, min_side=classifier.min_side, name=name)
        explainer = self._explainer(classifier)
        stages = explainer.stage_maps(decoded.image)
        seen = decoded.image.crop(tuple(round(v) for v in explainer.input_box(decoded.image)))
        return ExplainResult(
            image=decoded.name, version=classifier.version, picture=stage_grid(seen, stages), stages=tuple(stages)
        )

    def _photo(self, decoded: LoadedImage, source: Any, max_side: int | None, name: str | None) -> Image.Image:
        """The photo to draw on: decoded again, larger, when the model's decode was a reduced draft."""
        if decoded.image.size == decoded.original_size:
            return decoded.image
        again = decoded.data if decoded.data is not None else source
        return read_image(again, limits=self.limits, min_side=max_side, name=name or decoded.name).image

    def _explainer(self, classifier: Classifier) -> Explainer:
        with self._lock:
            explainer = self._explainers.get(classifier.version)
        if explainer is not None and explainer.classifier is classifier:
            return explainer
        explainer = Explainer(classifier)  # copies the model: outside the lock, predictions go on
        with self._lock:
            # Only the version in use keeps a model copy for explanations.
            self._explainers = {classifier.version: explainer}
        return explainer

    # --- teaching: the project dataset -----------------------------------------------------------

    def known_labels(self) -> list[str]:
        """The labels of the version now serving."""
        return list(self.classifier.labels)

    def label_choices(self) -> list[str]:
        """What a contributor can pick: the project's own categories first, then the model's labels."""
        known = self.known_labels()
        own = [c.name for c in self.dataset.categories(known)]
        seen = {name.casefold() for name in own}
        return own + sorted((label for label in known if label.casefold() not in seen), key=str.casefold)

    def create_category(self, name: str, *, contributor: str | None = None) -> Category:
        return self.dataset.create_category(name, contributor=contributor, known=self.known_labels())

    def record_feedback(
        self,
        source: Any,
        label: str,
        *,
        prediction: dict[str, Any] | None = None,
        contributor: str | None = None,
        name: str | None = None,
    ) -> AddResult:
        """Store an image with the label a contributor gave after seeing the model's prediction.

        It is a confirmation when the label is the model's top label, else a correction. Without
        the prediction the contributor saw (`PredictionResult.to_json()`), the model predicts now.
        """
        if prediction is None:
            prediction = self.predict(source, name=name).to_json()
        feedback = feedback_from(prediction)
        kind = "confirmation" if label.strip().casefold() == feedback.predicted_label.casefold() else "correction"
        example = Example(source, label, name=name, feedback=feedback)
        result = self.dataset.add(example, source=kind, contributor=contributor, known=self.known_labels())
        if result.status != "rejected":
            self._log_feedback(result, kind, prediction)
        return result

    def _log_feedback(self, result: AddResult, kind: str, prediction: dict[str, Any]) -> None:
        """Mark the logged prediction as confirmed or corrected: by its id, else by the image's hash."""
        logged_kind = "confirmed" if kind == "confirmation" else "corrected"
        self.metrics.observe_feedback(logged_kind)
        if self.prediction_log is None:
            return
        prediction_id = prediction.get("id") if isinstance(prediction.get("id"), str) else None
        self.prediction_log.record_feedback(
            label=result.label, kind=logged_kind, prediction_id=prediction_id,
            image_sha256=None if prediction_id else result.sha256,
        )

    def add_examples(
        self,
        sources: Sequence[Any],
        label: str,
        *,
        contributor: str | None = None,
        names: Sequence[str | None] | None = None,
        on_result: Any = None,
    ) -> list[AddResult]:
        """Add example images of one category (created if new); one result per image."""
        names = list(names) if names is not None else [None] * len(sources)
        examples = [Example(source, label, name=name) for source, name in zip(sources, names)]
        return self.dataset.add_many(
            examples, source="upload", contributor=contributor, known=self.known_labels(), on_result=on_result
        )

    def dataset_stats(self) -> dict[str, Any]:
        return self.dataset.stats(self.known_labels())

    def list_versions(self) -> list[VersionInfo]:
        return self.registry.list_versions() if self.registry else []

    def promote(self, ref: str) -> VersionInfo:
        """Make `ref` production and serve it from the next request on."""
        info = self._require_registry().promote(ref)
        self._switch_to(info.version)
        self._follow_candidate()
        return info

    def rollback(self) -> VersionInfo:
        """Serve the previous production version again."""
        info = self._require_registry().rollback()
        self._switch_to(info.version)
        self._follow_candidate()
        return info

    def refresh(self) -> str:
        """Serve what `production` points at now (another process may have promoted or rolled back),
        and, while the canary share is above 0, what `candidate` points at."""
        if self.registry is not None:
            self._switch_to(self.registry.resolve("production"))
            self._follow_candidate()
        return self.serving_version

    def follow_production(self, interval_s: float) -> threading.Event:
        """Check `production` every `interval_s` in a background thread; set the returned event to stop.

        A training run or a `classifr promote` in another process then reaches the running app
        without a restart; requests already running finish on the model they started with.
        """
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(interval_s):
                try:
                    self.refresh()
                except ClassifrError as err:
                    logger.warning("could not check the production version: %s", err)

        threading.Thread(target=loop, name="classifr-follow-production", daemon=True).start()
        return stop

    def _switch_to(self, version: str) -> None:
        if version == self.serving_version:
            return
        with self._lock:
            candidate = self._candidate
        if candidate is not None and candidate.version == version:
            classifier = candidate  # promoting the canary's candidate: no second load
        else:
            classifier = self._load(self._require_registry().local_path(version), version)
        with self._lock:
            self._classifier = classifier
        self._publish_serving()
        logger.info("now serving %s", version)

    def _follow_candidate(self) -> None:
        """Load `candidate` for the canary; none when the share is 0, there is no candidate, or it is production."""
        registry = self._require_registry()
        wanted = None
        if self.canary_share > 0:
            try:
                wanted = registry.resolve("candidate")
            except VersionNotFoundError:
                wanted = None  # nothing trained yet
            if wanted == self.serving_version:
                wanted = None
        with self._lock:
            current = self._candidate.version if self._candidate is not None else None
        if wanted == current:
            return
        loaded = self._load(registry.local_path(wanted), wanted) if wanted else None
        with self._lock:
            self._candidate = loaded
        self._publish_serving()
        logger.info("canary: %s", f"{wanted} serves {self.canary_share:.0%} of predictions" if wanted else "off")

    def _load(self, folder: Path, version: str) -> Classifier:
        """A registry version on the configured backend (CLASSIFR_BACKEND)."""
        return load_classifier(folder, version=version, backend=self.settings.backend, num_threads=self.settings.num_threads)

    def _publish_serving(self) -> None:
        production, candidate, share = self._serving()
        serving = {"production": production.version}
        if candidate is not None and share > 0:
            serving["candidate"] = candidate.version
        self.metrics.set_serving(serving)

    def _require_registry(self) -> ModelRegistry:
        if self.registry is None:
            raise ClassifrError(f"CLASSIFR_MODEL={self.settings.model!r} is served directly; there is no registry")
        return self.registry


def open_prediction_log(settings: Settings) -> PredictionLog | None:
    """The SQLite prediction log under CLASSIFR_HOME, or None when CLASSIFR_PREDICTION_LOG=0."""
    if not settings.prediction_log:
        return None
    return PredictionLog(
        settings.prediction_log_path, store_images=settings.store_images, max_images=settings.max_stored_images
    )


def feedback_from(prediction: dict[str, Any]) -> Feedback:
    """The model's top prediction out of a `PredictionResult.to_json()` payload, checked."""
    try:
        top = prediction["predictions"][0]
        return Feedback(predicted_label=top["label"], score=top["score"], model_version=prediction["version"])
    except (KeyError, IndexError, TypeError) as err:
        raise ClassifrError(f"the prediction to correct is missing or malformed ({_short(prediction)}): no {err}") from None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _describe(source: Any) -> str:
    if isinstance(source, (str, Path)):
        return str(source)
    return f"<{type(source).__name__}>"
