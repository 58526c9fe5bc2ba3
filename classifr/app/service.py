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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union


from PIL import Image

from classifr.core.config import Settings
from classifr.data.dataset import AddResult, Category, Example, Feedback, ProjectDataset, validate_category
from classifr.core.labels import near_duplicates
from classifr.core.errors import ClassifrError, FeedbackError, InvalidImageError, RegistryError, VersionNotFoundError
from classifr.core.memory import return_large_buffers_to_the_system
from classifr.core.images import ImageLimits, LoadedImage, read_image, stored_copy
from classifr.core.storage import disk_free
from classifr.monitoring.log import LoggedPrediction, PredictionLog
from classifr.monitoring.records import SOURCES as ORIGINS
from classifr.app.feedback import PredictionClaim, check_claim, feedback_of, parse_claim
from classifr.app.feedback import prediction_id as feedback_prediction_id
from classifr.monitoring.process import ProcessHealth
from classifr.monitoring.prometheus import ServingMetrics
from classifr.versions.registry import ModelRegistry, VersionInfo
from classifr.app.access import PasswordAttempts, require_maintainer
from classifr.app.grants import GrantIssuer, MaintainerGrant
from classifr.app.loading import PendingModel
from classifr.app.pinned import PinnedVersions
from classifr.app.jobs import JobState, TrainingJobs
from classifr.monitoring.report import monitor_summary
from classifr.versions.folder import read_metrics
from classifr.versions.overview import ModelOverview, describe_model, describe_version
from classifr.versions.study_reports import BenchmarkReport, list_reports, read_report

if TYPE_CHECKING:
    # Imported where they are used: torch, Captum and the model stay off the start-up path
    # (docs/speed.md, "Start-up").
    from classifr.inference.classifier import Classifier, Prediction
    from classifr.inference.explain import Explainer, Explanation, StageMap
    from classifr.inference.faithfulness import Faithfulness

logger = logging.getLogger(__name__)

FEEDBACK_DECODE_SIDE = 32  # feedback needs the photo's bytes checked, not a full decode
FEEDBACK_LOOKUP_WAIT_S = 5.0  # how long an answer waits for its prediction to reach the log
THUMBNAIL_SIDE = 128  # px: a photo's thumbnail in the Teach tab's results (a JPEG draft decode)

Serving = Union["Classifier", PendingModel]  # a loaded version, or one still loading at start-up


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
        classifier: Serving,
        dataset: ProjectDataset | None = None,
        prediction_log: PredictionLog | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.limits = ImageLimits(
            max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels,
            max_decoded_bytes=settings.max_decoded_bytes,
        )
        self.dataset = dataset or ProjectDataset(settings.dataset_dir, limits=self.limits)
        self.sync: Any = None  # a classifr.data.hub_sync.DatasetSync when CLASSIFR_DATASET_REPO is set
        self.prediction_log = prediction_log
        self.hf_api: Any = None  # the injected Hub client (tests), else huggingface_hub's default
        self.process_health = ProcessHealth(settings.home)
        self.password_attempts = PasswordAttempts()  # wrong maintainer passwords per client address
        self._grants = GrantIssuer()  # proof for the methods that return logged photos (docs/privacy.md)
        self.metrics = ServingMetrics(disk_free=self.process_health.disk_free_bytes, log_queue_depth=self._log_queue_depth)
        self._lock = threading.Lock()
        self._classifier = classifier
        self._candidate: Classifier | None = None  # served to `canary_share` of requests when set
        # Versions that only pinned calls use, within a memory bound (classifr.app.pinned).
        self._pinned = PinnedVersions(self._load_pinned, settings.pinned_versions_bytes)
        # Every prediction's forward pass runs on this one thread, one at a time: each already uses
        # every core, and PyTorch's OpenMP threads serve one calling thread at full speed but are
        # 1.5x slower once a second calling thread exists (docs/speed.md, "One forward thread").
        # Decoding goes on in the callers' threads meanwhile.
        self._forward = ThreadPoolExecutor(max_workers=1, thread_name_prefix="classifr-forward")
        self._canary_share = settings.canary_share
        self._draw = random.Random()
        self._explainers: dict[str, Explainer] = {}
        # Explanations beyond this many wait their turn: each holds a decode, a model copy's
        # activations and a rendering at once (docs/speed.md, "Memory per request").
        self._explaining = threading.BoundedSemaphore(settings.max_concurrent_explanations)
        return_large_buffers_to_the_system()  # freed decodes leave the process (classifr.core.memory)
        self._training_jobs: TrainingJobs | None = None  # created on first use: most processes never train
        # alias -> (version, why it was refused): not loaded again until the alias points elsewhere.
        self._refused: dict[str, tuple[str, str]] = {}
        self._publish_serving()

    def attach_hub(self, *, hf_api: Any = None, sync: Any = None) -> None:
        """The Hub client (injected in tests) and the project dataset's Hub sync, once the service exists
        (the sync reports the serving version's labels in the dataset card)."""
        self.hf_api = hf_api
        self.sync = sync

    def close(self) -> None:
        """Push what the dataset sync has not pushed yet, write what the prediction log holds, stop both."""
        if self.sync is not None:
            self.sync.stop()
            self.sync = None
        if self.prediction_log is not None:
            self.prediction_log.close()
        self._forward.shutdown(wait=False)

    @property
    def classifier(self) -> Classifier:
        """The serving version's model; waits while it is still loading at start-up."""
        with self._lock:
            current = self._classifier
        return _loaded(current)

    def _serving(self) -> tuple[Classifier, Classifier | None, float]:
        with self._lock:
            current, candidate, share = self._classifier, self._candidate, self._canary_share
        return _loaded(current), candidate, share

    def health(self) -> dict[str, Any]:
        """`{"status": "ok" | "loading" | "degraded" | "failed", "version": ..., "reason"?, "refused"?}`
        for /health (docs/api.md, "/health"), with "storage": `storage_status()`."""
        return {**self._model_health(), "storage": self.storage_status()}

    def storage_status(self) -> dict[str, Any]:
        """`{"paused": bool, "reason": str | None, "free_bytes": int, "repairs": [...]}`: whether new
        photos, corrections and predictions can be stored now (docs/storage.md). Predictions are
        served either way; `repairs`: what the dataset's check at opening fixed or found."""
        states = [self.dataset.storage]
        if self.prediction_log is not None:
            states.append(self.prediction_log.storage)
        reason = next((problem for problem in (state.problem() for state in states) if problem), None)
        return {
            "paused": reason is not None,
            "reason": reason,
            "free_bytes": disk_free(self.settings.home),
            "repairs": list(self.dataset.repairs),
        }

    def _model_health(self) -> dict[str, Any]:
        """The serving model's state: "degraded" while its last prediction gave non-finite scores;
        "refused" names a production version that failed its checks (the previous one still serves)."""
        with self._lock:
            current = self._classifier
            refused = self._refused.get("production")
        state: dict[str, Any] = {"version": current.version}
        if refused is not None:
            state["refused"] = {"version": refused[0], "reason": refused[1]}
        if isinstance(current, PendingModel) and not current.ready:
            if current.error is not None:
                return {"status": "failed", **state, "reason": current.error}
            return {"status": "loading", **state}
        problem = _loaded(current).output_problem
        if problem is not None:
            return {"status": "degraded", **state, "reason": problem}
        return {"status": "ok", **state}

    @property
    def candidate_version(self) -> str | None:
        """The version the canary serves to `canary_share` of requests, or None when there is no canary."""
        return self.serving_roles().get("candidate")

    def serving_roles(self) -> dict[str, str]:
        """`{"production": "v3"}`, plus `"candidate"` while the canary serves one."""
        with self._lock:
            production, candidate, share = self._classifier, self._candidate, self._canary_share
        roles = {"production": production.version}
        if candidate is not None and share > 0:
            roles["candidate"] = candidate.version
        return roles

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
        with self._lock:
            return self._classifier.version  # known while the model is still loading

    @property
    def serving_backend(self) -> str:
        """What runs the serving version's predictions: "onnx" (ONNX Runtime) or "torch"."""
        return self.classifier.backend

    def predict(
        self, source: Any, *, top_k: int | None = None, name: str | None = None, origin: str = "cli"
    ) -> PredictionResult:
        """Classify one image; a bad image raises InvalidImageError (a ValueError) with a readable message."""
        result = self.predict_batch([source], top_k=top_k, names=[name], origin=origin)[0]
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
        version: str | None = None,
        clients: Sequence[str | None] | None = None,
    ) -> list[PredictionResult]:
        """Classify many images in one forward pass per model version; an unreadable image gets an
        error result, not an exception.

        `version` None (or "production"): production serves, and the canary's candidate serves its
        share. A version ("v2") or another alias ("candidate") pins the batch: exactly that version
        serves it, never the canary (docs/api.md, "Pinned versions"); an unknown one raises
        VersionNotFoundError naming the known versions. `origin` (one of `ORIGINS`: "ui", "api",
        "cli", "feedback") and each image's `clients` address are recorded in the prediction log
        (docs/monitoring.md, "Origins").
        """
        if origin not in ORIGINS:
            raise ValueError(f"origin must be one of {', '.join(ORIGINS)}, got {origin!r}")
        started = time.perf_counter()
        top_k = self.settings.top_k if top_k is None else top_k
        names = list(names) if names is not None else [None] * len(sources)
        clients = list(clients) if clients is not None else [None] * len(sources)
        if not len(names) == len(clients) == len(sources):
            raise ValueError(f"got {len(sources)} images but {len(names)} names and {len(clients)} clients")
        lanes, share = self._lanes(version)  # fixed for the whole batch, even if a promote lands
        decoded = self._decode_all(sources, names, max(c.min_side for c in lanes.values()), origin)
        decoded_at = time.perf_counter()
        first = next(iter(lanes))
        routed = {i: self._route(first, share) for i, item in enumerate(decoded) if isinstance(item, LoadedImage)}
        ranked: dict[int, tuple[Classifier, str, list[Prediction], Any]] = {}
        for variant, classifier in lanes.items():
            chosen = [i for i, v in routed.items() if v == variant]
            if not chosen:
                continue
            rows, features = self._forward.submit(
                classifier.predict_with_features,
                [decoded[i].image for i in chosen], top_k=top_k, features=self.prediction_log is not None,
            ).result()
            for n, i in enumerate(chosen):
                ranked[i] = (classifier, variant, rows[n], None if features is None else features[n])
        finished = time.perf_counter()
        timings = {"decode": (decoded_at - started) * 1000, "model": (finished - decoded_at) * 1000}
        results = []
        for i, (item, source, name) in enumerate(zip(decoded, sources, names)):
            label = name or _describe(source)
            if isinstance(item, ClassifrError):
                results.append(PredictionResult(image=label, version=lanes[first].version, error=str(item)))
                continue
            classifier, variant, predictions, embedding = ranked[i]
            result = PredictionResult(
                image=label, version=classifier.version, predictions=tuple(predictions), original_size=item.original_size,
                timings_ms=timings, id=uuid.uuid4().hex, variant=variant,
            )
            self._record(result, item, embedding, latency_s=finished - started, origin=origin, client=clients[i])
            results.append(result)
        return results

    def _decode_all(
        self, sources: Sequence[Any], names: Sequence[str | None], min_side: int, origin: str
    ) -> list[LoadedImage | ClassifrError]:
        decoded: list[LoadedImage | ClassifrError] = []
        for source, name in zip(sources, names):
            try:
                decoded.append(read_image(source, limits=self.limits, min_side=min_side, name=name))
            except ClassifrError as err:
                decoded.append(err)
                self.metrics.observe_error(source=origin)
        return decoded

    def _lanes(self, ref: str | None) -> tuple[dict[str, Classifier], float]:
        """The versions that may serve a batch, by variant, and the candidate's share of its images."""
        production, candidate, share = self._serving()
        if ref is None or ref == "production":
            if candidate is None or share <= 0:
                return {"production": production}, 0.0
            return {"production": production, "candidate": candidate}, share
        version = self.resolve_version(ref)
        if version == production.version:
            return {"production": production}, 0.0
        if candidate is not None and version == candidate.version:
            return {"candidate": candidate}, 0.0
        return {"pinned": self._pinned.get(version)}, 0.0

    def resolve_version(self, ref: str) -> str:
        """"v3" | "production" | "candidate" | "latest" -> "v3"; VersionNotFoundError (listing the
        known versions) otherwise. A version already loaded is answered without asking the registry."""
        if not isinstance(ref, str) or not ref:
            raise VersionNotFoundError(f"a model version is a name like 'v3' or an alias like 'production', got {ref!r}")
        with self._lock:
            loaded = {self._classifier.version} | ({self._candidate.version} if self._candidate else set())
        if ref in loaded or ref in self._pinned.versions():
            return ref
        if self.registry is None:
            if ref == "production":
                return self.serving_version
            raise VersionNotFoundError(f"unknown model version {ref!r}; this app serves {self.serving_version} only")
        return self.registry.resolve(ref)

    @property
    def pinned_versions(self) -> list[str]:
        """Versions loaded only for pinned calls, least recently used first."""
        return self._pinned.versions()

    def _load_pinned(self, version: str) -> tuple[Classifier, Path]:
        folder = self._require_registry().local_path(version)
        return self._load(folder, version), folder

    def _route(self, first: str, share: float) -> str:
        return "candidate" if share > 0 and self._draw.random() < share else first

    def _record(
        self, result: PredictionResult, item: LoadedImage, embedding: Any, *, latency_s: float, origin: str, client: str | None
    ) -> None:
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
                client=client,
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
        steps: int | None = None,
        baseline: str = "black",
        max_side: int | None = None,
        name: str | None = None,
    ) -> ExplainResult:
        """Explain the serving model's decision on one image, rendered over the photo.

        The overlay is as large as the photo (or `max_side`, for display) and is drawn at that size;
        the attribution itself runs on the model's input size, from a decode as small as the model
        allows. At most `max_concurrent_explanations` run at once; others wait.
        """
        from classifr.inference.explain import IG_STEPS
        from classifr.inference.threads import in_own_thread

        steps = IG_STEPS if steps is None else steps
        with self._explaining:
            # PyTorch runs off the request thread (classifr.inference.threads).
            return in_own_thread(
                self._explain, source, method=method, target=target, view=view, steps=steps, baseline=baseline,
                max_side=max_side, name=name,
            )

    def _explain(
        self, source: Any, *, method: str, target: str | None, view: str, steps: int, baseline: str,
        max_side: int | None, name: str | None,
    ) -> ExplainResult:
        from classifr.inference.explain import model_sized
        from classifr.inference.overlay import fit, render

        classifier = self.classifier
        decoded = read_image(source, limits=self.limits, min_side=classifier.min_side, name=name)
        seen = model_sized(decoded.image, classifier.min_side)
        explanation = self._explainer(classifier).explain(seen, method=method, target=target, steps=steps, baseline=baseline)
        photo, label = self._photo(decoded, source, max_side, name), decoded.name
        del decoded  # a full-size non-JPEG decode is not needed once the photo is fitted
        picture = fit(render(photo, explanation, decoded_size=seen.size, view=view), max_side)
        return ExplainResult(image=label, version=classifier.version, picture=picture, explanation=explanation)

    def faithfulness(self, source: Any, explanation: ExplainResult, *, name: str | None = None) -> Faithfulness:
        """How far `explanation` (what `explain` returned for `source`) shows what the model used:
        its deletion and insertion curves (docs/features.md, "Faithfulness"). The photo is decoded
        again as `explain` did; an explanation of another version than the serving one is refused."""
        from classifr.inference.explain import model_sized
        from classifr.inference.faithfulness import measure
        from classifr.inference.threads import in_own_thread

        if explanation.explanation is None:
            raise ClassifrError("a stage grid (layers) has no heatmap to measure; explain with a heatmap method")

        def work() -> Faithfulness:
            classifier = self.classifier
            if classifier.version != explanation.version:
                raise ClassifrError(
                    f"the model changed since this explanation ({explanation.version} -> {classifier.version}); explain again"
                )
            decoded = read_image(source, limits=self.limits, min_side=classifier.min_side, name=name)
            pixels = classifier.preprocess([model_sized(decoded.image, classifier.min_side)]).contiguous()
            made = explanation.explanation
            return measure(self._explainer(classifier), pixels, made.heatmap, made.target_index)

        with self._explaining:
            return in_own_thread(work)  # PyTorch runs off the request thread (classifr.inference.threads)

    def explain_layers(self, source: Any, *, name: str | None = None) -> ExplainResult:
        """How each stage of the backbone responds to the image, as one grid picture."""
        from classifr.inference.threads import in_own_thread

        with self._explaining:
            return in_own_thread(self._explain_layers, source, name=name)  # (classifr.inference.threads)

    def _explain_layers(self, source: Any, *, name: str | None) -> ExplainResult:
        from classifr.inference.explain import model_sized
        from classifr.inference.overlay import stage_grid

        classifier = self.classifier
        decoded = read_image(source, limits=self.limits, min_side=classifier.min_side, name=name)
        image = model_sized(decoded.image, classifier.min_side)
        explainer = self._explainer(classifier)
        stages = explainer.stage_maps(image)
        seen = image.crop(tuple(round(v) for v in explainer.input_box(image)))
        picture = stage_grid(seen, stages)
        return ExplainResult(image=decoded.name, version=classifier.version, picture=picture, stages=tuple(stages))

    def _photo(self, decoded: LoadedImage, source: Any, max_side: int | None, name: str | None) -> Image.Image:
        """The photo to draw on, fitted to `max_side` (the whole photo when None): decoded again,
        larger, only when the model's decode was a reduced draft smaller than that."""
        from classifr.inference.overlay import fit

        image = decoded.image
        if image.size != decoded.original_size and (max_side is None or max(image.size) < max_side):
            width, height = decoded.original_size
            # draft() keeps both sides at least the request: ask for the shorter side the display needs.
            needed = None if max_side is None else -(-max_side * min(width, height) // max(width, height))
            again = decoded.data if decoded.data is not None else source
            image = read_image(again, limits=self.limits, min_side=needed, name=name or decoded.name).image
        return fit(image, max_side)

    def _explainer(self, classifier: Classifier) -> Explainer:
        with self._lock:
            explainer = self._explainers.get(classifier.version)
        if explainer is not None and explainer.classifier is classifier:
            return explainer
        from classifr.inference.explain import Explainer

        explainer = Explainer(classifier)  # copies the model: outside the lock, predictions go on
        with self._lock:
            # Only the version in use keeps a model copy for explanations.
            self._explainers = {classifier.version: explainer}
        return explainer

    # --- teaching: the project dataset -----------------------------------------------------------

    def known_labels(self) -> list[str]:
        """The labels of the version now serving (known while its model is still loading)."""
        with self._lock:
            return list(self._classifier.labels)

    def label_choices(self) -> list[str]:
        """What a contributor can pick: the project's own categories first, then the model's labels."""
        known = self.known_labels()
        own = [c.name for c in self.dataset.categories(known)]
        seen = {name.casefold() for name in own}
        return own + sorted((label for label in known if label.casefold() not in seen), key=str.casefold)

    def check_new_label(self, name: str) -> dict[str, Any]:
        """What storing `name` as a label would do, before anything is stored: `label` (trimmed),
        `existing` (the known spelling when it exists ignoring case, else None: it would be a new
        category) and `near` (other known labels it may be a near-duplicate of: docs/features.md,
        "New categories"). LabelError names an invalid name."""
        label = validate_category(name)
        known = self.known_labels()
        existing = self.dataset.resolve_label(label, known)
        near = [other for other in near_duplicates(label, self.label_choices()) if other != existing]
        return {"label": label, "existing": existing, "near": near}

    def create_category(self, name: str, *, contributor: str | None = None) -> Category:
        return self.dataset.create_category(name, contributor=contributor, known=self.known_labels())

    def record_feedback(
        self,
        source: Any,
        label: str | None,
        *,
        prediction: Any = None,
        contributor: str | None = None,
        name: str | None = None,
    ) -> AddResult:
        """Store a photo with a contributor's answer to a prediction: `label`, or None to confirm
        the model's top label. A confirmation when the answer is the top label, else a correction.

        `prediction` names the prediction answered: its id, or the `predict` result as it came back
        (docs/api.md, "Feedback"). What the model said comes from the prediction log, never from the
        caller: the photo must be the one that prediction was made for, and any field passed back
        must match the log. Without an id, or with the log off, the serving model predicts now
        (origin "feedback") and that is the prediction answered. FeedbackError when refused.
        """
        claim = parse_claim(prediction)
        _check_answer(label)
        loaded = read_image(source, limits=self.limits, min_side=FEEDBACK_DECODE_SIDE, name=name)
        photo = loaded.data if loaded.data is not None else source  # store exactly the bytes checked
        if claim.id is not None and self.prediction_log is not None:
            record = self._logged_prediction(claim)
            if record["image_sha256"] != loaded.sha256:
                raise FeedbackError(f"this photo is not the one prediction {claim.id[:8]} was made for: classify it, then answer")
            return self._store_feedback(photo, label, feedback_of(record), record["id"], contributor, name)
        fresh = self.predict(photo, name=name, origin="feedback")
        top = fresh.predictions[0]
        said = Feedback(predicted_label=top.label, score=float(top.score), model_version=fresh.version)
        return self._store_feedback(photo, label, said, fresh.id if self.prediction_log else None, contributor, name)

    def review_feedback(
        self, prediction_id: Any, label: str | None, *, grant: MaintainerGrant | None, contributor: str | None = None
    ) -> AddResult:
        """Confirm (`label` None) or correct a logged prediction from the Monitor's review queue:
        the photo and what the model said both come from the prediction log. The photo may have
        been sent only to be classified, so only a maintainer (`grant`) may store it."""
        self._grants.check(grant)
        log = self._require_log()
        _check_answer(label)
        record = self._logged_prediction(PredictionClaim(id=feedback_prediction_id(prediction_id)))
        photo = log.image(record["id"])
        if photo is None:
            raise FeedbackError(f"the photo of prediction {record['id'][:8]} is no longer kept; refresh the queue")
        name = f"review-{record['id'][:8]}.jpg"
        return self._store_feedback(photo, label, feedback_of(record), record["id"], contributor, name)

    def feedback_conflicts(self, *, grant: MaintainerGrant | None, limit: int = 100) -> list[dict[str, Any]]:
        """Later answers that differ from the first one given for the same photo, newest first
        (docs/monitoring.md, "Feedback conflicts"); for maintainers only (`grant`)."""
        self._grants.check(grant)
        return self._require_log().feedback_conflicts(limit=limit)

    def dataset_conflicts(self, *, grant: MaintainerGrant | None) -> list[dict[str, Any]]:
        """Photos of the project dataset with conflicting labels, not settled yet: `sha256`,
        `labels` and `answers` (label, source, contributor, time), for maintainers only (`grant`)."""
        self._grants.check(grant)
        conflicted = {c["sha256"]: c["labels"] for c in self.dataset.conflicts()}
        answers: dict[str, list[dict[str, Any]]] = {sha: [] for sha in conflicted}
        for row in self.dataset.rows():
            if row.sha256 in answers:
                answers[row.sha256].append(
                    {"label": row.label, "source": row.source, "contributor": row.contributor, "created_at": row.created_at})
        return [{"sha256": sha, "labels": labels, "answers": answers[sha]} for sha, labels in conflicted.items()]

    def dataset_photo(self, sha256: str, *, grant: MaintainerGrant | None) -> bytes | None:
        """The stored photo of a project dataset image (for the conflicts view); maintainers only."""
        self._grants.check(grant)
        return self.dataset.image(sha256)

    def settle_conflict(
        self, sha256: str, label: str, *, grant: MaintainerGrant | None, contributor: str | None = None
    ) -> str:
        """A maintainer picks the right label of a photo with conflicting answers; training then
        uses that label only (docs/monitoring.md, "Feedback conflicts"). The label settled."""
        self._grants.check(grant)
        return self.dataset.settle(sha256, label, contributor=contributor).label

    def _logged_prediction(self, claim: PredictionClaim) -> dict[str, Any]:
        """The log's record of the claimed prediction, checked against the claim; FeedbackError if unknown."""
        log = self._require_log()
        record = log.prediction(claim.id)
        # Predicted a moment ago: the writer thread may not have written it yet.
        if record is None and log.flush(FEEDBACK_LOOKUP_WAIT_S):
            record = log.prediction(claim.id)
        if record is None:
            raise FeedbackError(f"unknown or expired prediction id {claim.id!r}: classify the photo again, then answer")
        check_claim(claim, record)
        return record

    def _store_feedback(
        self, photo: Any, label: str | None, said: Feedback, prediction_id: str | None, contributor: str | None, name: str | None
    ) -> AddResult:
        answer = said.predicted_label if label is None else label
        kind = "confirmation" if answer.strip().casefold() == said.predicted_label.casefold() else "correction"
        example = Example(photo, answer, name=name, feedback=said)
        result = self.dataset.add(example, source=kind, contributor=contributor, known=self.known_labels())
        if result.status != "rejected":
            self._log_feedback(result, kind, prediction_id)
        return result

    def _log_feedback(self, result: AddResult, kind: str, prediction_id: str | None) -> None:
        """Mark the logged prediction as confirmed or corrected (a later, different answer for the
        same photo becomes a conflict there: docs/monitoring.md, "Feedback conflicts")."""
        logged_kind = "confirmed" if kind == "confirmation" else "corrected"
        self.metrics.observe_feedback(logged_kind)
        if self.prediction_log is None or prediction_id is None:
            return
        self.prediction_log.record_feedback(label=result.label, kind=logged_kind, prediction_id=prediction_id)

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

    def thumbnail(self, source: Any, *, side: int = THUMBNAIL_SIDE, name: str | None = None) -> Image.Image | None:
        """A small copy of a photo for display (the Teach tab's results); None when it cannot be read."""
        try:
            image = read_image(source, limits=self.limits, min_side=side, name=name).image
        except ClassifrError:
            return None
        image.thumbnail((side, side))
        return image

    def list_versions(self) -> list[VersionInfo]:
        return self.registry.list_versions() if self.registry else []

    def previous_production(self) -> str | None:
        """The version a rollback would serve again; None without a registry or an earlier production."""
        if self.registry is None:
            return None
        try:
            return self.registry.rollback_target()
        except RegistryError:
            return None

    def promote(self, ref: str) -> VersionInfo:
        """Make `ref` production and serve it from the next request on.

        The version is loaded and checked first (classifr.inference.version_check): one that fails
        raises VersionCheckError with the reason, and production stays where it was.
        """
        registry = self._require_registry()
        version = registry.resolve(ref)
        classifier = self._loaded_version(version)
        info = registry.promote(version)
        self._switch_to(info.version, classifier)
        self._follow_candidate()
        return info

    def rollback(self) -> VersionInfo:
        """Serve the previous production version again; refused, like promote, if it fails its checks."""
        registry = self._require_registry()
        target = registry.rollback_target()
        classifier = self._loaded_version(target)
        info = registry.rollback()
        self._switch_to(info.version, classifier if info.version == target else None)
        self._follow_candidate()
        return info

    def refresh(self) -> str:
        """Serve what `production` points at now (another process may have promoted or rolled back),
        and, while the canary share is above 0, what `candidate` points at.

        A version that fails to load or to pass its checks never replaces the serving one: it
        raises once, and is then skipped (no second load) until `production` points elsewhere.
        """
        if self.registry is not None:
            production = self.registry.resolve("production")
            if not self._is_refused("production", production):
                try:
                    self._switch_to(production)
                except Exception as err:
                    self._refuse("production", production, err)
                    raise
            self._follow_candidate()
        return self.serving_version

    def follow_production(self, interval_s: float) -> threading.Event:
        """Check `production` every `interval_s` in a background thread; set the returned event to stop.

        A training run or a `classifr promote` in another process then reaches the running app
        without a restart; requests already running finish on the model they started with. Any
        failure is logged (once while it repeats) and the last good version keeps serving.
        """
        stop = threading.Event()

        def loop() -> None:
            last_problem = None
            while not stop.wait(interval_s):
                try:
                    self.refresh()
                    last_problem = None
                except Exception as err:  # noqa: BLE001 - the follower must outlive any failure
                    problem = f"{type(err).__name__}: {err}"
                    if problem != last_problem:
                        self._log_follow_failure(err)
                    last_problem = problem

        threading.Thread(target=loop, name="classifr-follow-production", daemon=True).start()
        return stop

    def _log_follow_failure(self, err: Exception) -> None:
        message = "could not follow the production version (still serving %s): %s"
        if isinstance(err, ClassifrError):
            logger.warning(message, self.serving_version, err)
        else:  # a bug, not a bad version: keep its traceback
            logger.exception(message, self.serving_version, f"{type(err).__name__}: {err}")

    def _is_refused(self, alias: str, version: str) -> bool:
        """True while `alias` still points at the version refused for it; forgets it once it moved."""
        with self._lock:
            refused = self._refused.get(alias)
            if refused is not None and refused[0] != version:
                del self._refused[alias]
                refused = None
        return refused is not None

    def _refuse(self, alias: str, version: str, err: Exception) -> None:
        with self._lock:
            self._refused[alias] = (version, str(err) or type(err).__name__)

    def _loaded_version(self, version: str) -> Classifier:
        """`version` loaded and checked: the canary's candidate or a pinned copy when it is that
        version (it passed the same checks when it was loaded), else a new load."""
        with self._lock:
            candidate = self._candidate
        if candidate is not None and candidate.version == version:
            return candidate
        pinned = self._pinned.take(version)  # it serves as production or candidate now, not as a pinned copy
        if pinned is not None:
            return pinned
        return self._load(self._require_registry().local_path(version), version)

    def _switch_to(self, version: str, classifier: Classifier | None = None) -> None:
        """Serve `version` (`classifier`, when it is loaded already); a load that fails raises and
        leaves the serving version as it was."""
        if version == self.serving_version:
            return
        if classifier is None:
            classifier = self._loaded_version(version)
        with self._lock:
            self._classifier = classifier
            if self._refused.get("production", (None,))[0] == version:
                del self._refused["production"]  # it loads and passes now (e.g. a promote after a Hub outage)
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
        if wanted is not None and self._is_refused("candidate", wanted):
            wanted = None  # failed its checks already: no canary until `candidate` moves
        if wanted == current:
            return
        loaded = None
        if wanted is not None:
            try:
                loaded = self._load(registry.local_path(wanted), wanted)
            except Exception as err:  # noqa: BLE001 - a bad candidate must not stop production from being followed
                self._refuse("candidate", wanted, err)
                logger.warning("canary off: the candidate %s was refused: %s", wanted, err,
                               exc_info=not isinstance(err, ClassifrError))
                wanted = None
        with self._lock:
            self._candidate = loaded
        self._publish_serving()
        logger.info("canary: %s", f"{wanted} serves {self.canary_share:.0%} of predictions" if wanted else "off")

    def _load(self, folder: Path, version: str) -> Classifier:
        """A registry version on the configured backend (CLASSIFR_BACKEND), once it has passed the
        promotion checks (classifr.inference.version_check); VersionCheckError says why not."""
        from classifr.inference.version_check import load_promotable

        from classifr.inference.threads import in_own_thread

        # Its probe images run PyTorch: on a thread that ends with the load (classifr.inference.threads).
        return in_own_thread(load_promotable, folder, version=version, settings=self.settings)

    def _publish_serving(self) -> None:
        self.metrics.set_serving(self.serving_roles())

    def _require_registry(self) -> ModelRegistry:
        if self.registry is None:
            raise ClassifrError(f"CLASSIFR_MODEL={self.settings.model!r} is served directly; there is no registry")
        return self.registry

    # --- for the UI: everything the Gradio tabs read or do, so they never reach into the parts ----

    @property
    def has_registry(self) -> bool:
        """False when CLASSIFR_MODEL is served directly: no versions to list, promote or train."""
        return self.registry is not None

    @property
    def has_prediction_log(self) -> bool:
        """False when CLASSIFR_PREDICTION_LOG=0: there is nothing to monitor."""
        return self.prediction_log is not None

    def require_maintainer(self, password: str | None, oauth_token: str | None = None, *, client: str | None = None) -> str:
        """How a maintainer action is allowed ("password" or "org:NAME"); NotAMaintainerError otherwise.

        `client` is the caller's address: wrong passwords are limited per address, and a locked-out
        one gets MaintainerLockedOutError without its password being compared (docs/api.md).
        """
        return require_maintainer(
            self.settings, password=password, oauth_token=oauth_token, hf_api=self.hf_api,
            attempts=self.password_attempts, client=client,
        )

    def model_card(self, ref: str | None = None) -> ModelOverview:
        """The overview of `ref` (default: the serving version), with the project's pending labels."""
        classifier, repo = self.classifier, self.settings.dataset_repo
        if self.registry is None:
            return describe_model(classifier, dataset=self.dataset, dataset_repo=repo)
        return describe_version(
            self.registry, ref or classifier.version, classifier=classifier, dataset=self.dataset, dataset_repo=repo
        )

    def version_metrics(self, ref: str) -> tuple[str, dict[str, Any]]:
        """(version, metrics.json) of a version or alias; ("—", {}) when unknown, {} for versions without one."""
        registry = self._require_registry()
        try:
            version = registry.resolve(ref)
        except VersionNotFoundError:
            return "—", {}
        return version, read_metrics(registry.local_path(version)).data

    def onnx_export(self, ref: str | None = None) -> tuple[str, Path] | None:
        """(version, verified model.onnx) of `ref` (default: serving); None without a registry, version or export."""
        from classifr.inference.onnx_export import verified_onnx_path  # imports torch

        if self.registry is None:
            return None
        try:
            version = self.registry.resolve(ref or self.serving_version)
            path = verified_onnx_path(self.registry.local_path(version))
        except (ClassifrError, OSError) as err:
            logger.debug("no ONNX export for %r: %s", ref, err)
            return None
        return (version, path) if path is not None else None

    def categories(self) -> list[Category]:
        """The project dataset's categories, pending ones (unknown to the serving version) included."""
        return self.dataset.categories(self.known_labels())

    def sync_status(self) -> dict[str, Any] | None:
        """The Hub dataset sync's `DatasetSync.status()`; None when the dataset is kept locally."""
        return self.sync.status() if self.sync is not None else None

    def study_reports(self) -> list[str]:
        """Names of the benchmark reports under CLASSIFR_HOME/benchmarks, newest first."""
        return list_reports(self.settings.home)

    def study_report(self, name: str) -> BenchmarkReport:
        """One benchmark report; ClassifrError for a name that is unknown or not a plain name."""
        return read_report(self.settings.home, name)

    def metrics_text(self) -> bytes:
        """The Prometheus exposition of the serving metrics and the process's health, for `GET /metrics`."""
        return self.metrics.render()

    def observe_request(self, *, wait_s: float | None, work_s: float) -> None:
        """A predict event as its caller saw it: waiting before the handler ran (None when unknown) and
        the handler's own time; /metrics and `process_stats` report them."""
        self.metrics.observe_request(wait_s=wait_s, work_s=work_s)

    def process_stats(self) -> dict[str, Any]:
        """The Monitor's "Server" panel: CPU, memory, free disk of the home, the log's queue, and latency
        percentiles in ms, as the caller sees it (`caller_ms`: waiting + work of predict events) and
        the server's own (`server_ms`: decode + model in `predict_batch`); None where nothing was measured."""
        caller = self.metrics.recent_caller.percentiles(0.5, 0.95)
        server = self.metrics.recent_server.percentiles(0.5, 0.95)
        return {
            **self.process_health.snapshot(),
            "log_queue_depth": self._log_queue_depth(),
            "caller_ms": _in_ms(caller, len(self.metrics.recent_caller)),
            "server_ms": _in_ms(server, len(self.metrics.recent_server)),
        }

    def _log_queue_depth(self) -> int:
        log = self.prediction_log
        return log.queue_depth if log is not None else 0

    @property
    def metrics_content_type(self) -> str:
        """The Content-Type that goes with `metrics_text()`."""
        return self.metrics.content_type

    def monitor_summary(self, *, since: float | None = None) -> dict[str, Any]:
        """`classifr.monitoring.report.monitor_summary` of the log since `since`, with the serving roles."""
        return monitor_summary(self._require_log(), registry=self.registry, since=since, serving=self.serving_roles())

    def prediction_volume(self, *, bucket_s: float, since: float | None = None, version: str | None = None) -> list[dict[str, Any]]:
        """Predictions per time bucket and version."""
        return self._require_log().volume(bucket_s=bucket_s, version=version, since=since)

    def confidence_histogram(self, *, since: float | None = None, version: str | None = None) -> list[dict[str, Any]]:
        """Predictions per top-1 confidence bin."""
        return self._require_log().confidence_histogram(version=version, since=since)

    def label_distribution(self, *, since: float | None = None, version: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        """The most predicted labels with their counts."""
        return self._require_log().label_distribution(version=version, since=since, limit=limit)

    def maintainer_grant(
        self, password: str | None, oauth_token: str | None = None, *, client: str | None = None
    ) -> MaintainerGrant:
        """Proof, for the methods that return logged photos, that a maintainer asks (see
        `require_maintainer`, whose password limits apply); NotAMaintainerError otherwise."""
        return self._grants.issue(self.require_maintainer(password, oauth_token, client=client))

    # Photos from the prediction log were sent by anyone, often only to be classified: they are
    # shown to maintainers only (docs/privacy.md), so each method below takes a maintainer grant.

    def gallery(
        self, kind: str, *, grant: MaintainerGrant | None, version: str | None = None, limit: int = 24, offset: int = 0
    ) -> list[dict[str, Any]]:
        """"corrected" or "confirmed" photos, each once, worst first (`offset` pages);
        NotAMaintainerError without a grant."""
        self._grants.check(grant)
        return self._require_log().gallery(kind, version=version, limit=limit, offset=offset)

    def review_queue(
        self, *, grant: MaintainerGrant | None, version: str | None = None, limit: int = 12, offset: int = 0
    ) -> list[dict[str, Any]]:
        """The least confident photos that still have their image and no answer, each once
        (`offset` pages); NotAMaintainerError without a grant."""
        self._grants.check(grant)
        return self._require_log().review_queue(version=version, limit=limit, offset=offset)

    def prediction_time_span(
        self, *, since: float | None = None, version: str | None = None
    ) -> tuple[float, float] | None:
        """(first, last) prediction time since `since`, None when there is none."""
        return self._require_log().time_span(version=version, since=since)

    def logged_image(self, prediction_id: str, *, grant: MaintainerGrant | None) -> bytes | None:
        """The stored copy of a logged prediction's image; None when it is no longer kept (or never
        was); NotAMaintainerError without a grant."""
        self._grants.check(grant)
        return self.prediction_log.image(prediction_id) if self.prediction_log is not None else None

    def flush_prediction_log(self) -> bool:
        """Wait until what was logged so far is written (so a refresh shows it); False on timeout."""
        return self.prediction_log.flush() if self.prediction_log is not None else True

    def start_training(self, arguments: Sequence[str]) -> JobState:
        """Start `python -m training.train ARGUMENTS` in the background; ClassifrError while one runs."""
        self._require_registry()
        return self._jobs().start(arguments)

    def cancel_training(self) -> JobState:
        """Stop the running training process; ClassifrError when none runs."""
        return self._jobs().cancel()

    def training_status(self) -> JobState:
        """The current (or last) run."""
        return self._jobs().state()

    def _jobs(self) -> TrainingJobs:
        with self._lock:
            if self._training_jobs is None:
                # A finished run refreshes before it reads as succeeded: whoever sees "succeeded" is
                # served what it promoted, without waiting for the production follower.
                self._training_jobs = TrainingJobs(self.settings.home, on_success=self.refresh)
            return self._training_jobs

    def _require_log(self) -> PredictionLog:
        if self.prediction_log is None:
            raise ClassifrError("the prediction log is off (CLASSIFR_PREDICTION_LOG=0): there is nothing to monitor")
        return self.prediction_log


def _check_answer(label: Any) -> None:
    """A contributor's answer is text or None (confirm); its content is the dataset's to check."""
    if label is not None and not isinstance(label, str):
        raise FeedbackError(f"the label must be text, got {type(label).__name__}")


def _in_ms(percentiles: list[float | None], count: int) -> dict[str, Any]:
    p50, p95 = (None if v is None else v * 1000 for v in percentiles)
    return {"p50": p50, "p95": p95, "count": count}


def _describe(source: Any) -> str:
    if isinstance(source, (str, Path)):
        return str(source)
    return f"<{type(source).__name__}>"


def _loaded(serving: Serving) -> Classifier:
    return serving.wait() if isinstance(serving, PendingModel) else serving
