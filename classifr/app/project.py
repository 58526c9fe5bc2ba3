"""The composition root: the one place that opens a Classifr project (one CLASSIFR_HOME) from Settings.

The app, the CLI and the training script all assemble their objects here, so the wiring (which
registry, whether v1 is built, the dataset, its Hub sync, the prediction log, the service) is
written once (docs/architecture.md, "Composition root"). The default version is injectable: a test
builds a whole project on a tiny model in milliseconds instead of the real EfficientNet-Lite0.

Heavy libraries (torch, transformers) are imported by what needs them, not here: opening the
registry alone (`classifr versions`, `classifr monitor`) stays fast.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock

from classifr.core.config import Settings
from classifr.core.errors import ClassifrError
from classifr.versions.registry import HubRegistry, LocalRegistry, ModelRegistry

if TYPE_CHECKING:
    from classifr.app.bootstrap import DefaultVersion
    from classifr.app.service import ClassifrService

logger = logging.getLogger(__name__)


def open_registry(settings: Settings, *, hf_api: Any = None, default_version: DefaultVersion | None = None) -> ModelRegistry:
    """The Hub registry when CLASSIFR_REGISTRY_REPO is set, else the local one.

    Opened as it is: an empty registry stays empty (read-only commands say so). With
    `default_version`, an empty registry first gets it as v1, the production version.
    """
    if settings.model:
        raise ClassifrError(f"CLASSIFR_MODEL={settings.model!r} is served directly; it has no registry")
    if settings.registry_repo:
        registry: ModelRegistry = HubRegistry(
            settings.registry_repo, hf_api=hf_api, token=settings.hf_token, cache_dir=settings.cache_dir / "hub"
        )
        if default_version is not None:
            # No file lock can span machines; the Hub's parent_commit check rejects a second racing v1.
            _ensure_default(registry, default_version)
        return registry
    return open_local_registry(settings.registry_dir, default_version=default_version)


def open_local_registry(root: Path, *, default_version: DefaultVersion | None = None) -> LocalRegistry:
    """The local registry in `root`; with `default_version`, v1 is built into it when it is empty."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    registry = LocalRegistry(root)
    if default_version is not None and registry.is_empty():
        # Two processes starting on an empty project must not both build a v1.
        with FileLock(str(root / ".bootstrap.lock")):
            _ensure_default(registry, default_version)
    return registry


def default_version_for(settings: Settings) -> DefaultVersion:
    """The embedded EfficientNet-Lite0, its ONNX export checked on Settings.onnx_verify_images photos."""
    from classifr.app.bootstrap import embedded_default_version

    return embedded_default_version(verify_images=settings.onnx_verify_images)


def open_service(
    settings: Settings,
    *,
    hf_api: Any = None,
    default_version: DefaultVersion | None = None,
    load_in_background: bool = False,
    configure_runtime: bool = False,
) -> ClassifrService:
    """Open the whole project: the registry (v1 built when empty) and its production model, or
    CLASSIFR_MODEL; the project dataset and its Hub sync when CLASSIFR_DATASET_REPO is set; the
    prediction log; the canary's candidate when CLASSIFR_CANARY_SHARE is above 0.

    `default_version`: what an empty registry gets as v1 (default: the embedded EfficientNet-Lite0).
    `load_in_background`: return before the serving model is loaded (the app's start-up); its
    predictions wait for the load and `service.health()` says "loading" until then.
    `configure_runtime`: set the process-wide torch threads and logging first (entry points only:
    the app; the CLI does it itself).
    """
    from classifr.app.service import ClassifrService
    from classifr.data.hub_sync import open_sync
    from classifr.app.loading import PendingModel

    log = open_prediction_log(settings)
    if settings.model:
        registry, version, folder = None, settings.model, settings.model
    else:
        registry = open_registry(settings, hf_api=hf_api, default_version=default_version or default_version_for(settings))
        version = registry.resolve("production")
        folder = registry.local_path(version)

    def load():
        from classifr.inference import classifier
        from classifr.inference.onnx_backend import load_classifier

        if configure_runtime:
            classifier.configure_runtime(settings.num_threads)
        return load_classifier(
            folder, version=version, revision=settings.model_revision if settings.model else None,
            backend=settings.backend, num_threads=settings.num_threads,
        )

    # A Hub id (CLASSIFR_MODEL) has no local config.json to read the labels from before the load.
    in_background = load_in_background and Path(folder).is_dir()
    if in_background:
        classifier = PendingModel(folder, version=version, load=load).start()
    else:
        from classifr.inference.threads import in_own_thread

        classifier = in_own_thread(load)  # PyTorch off the caller's thread (classifr.inference.threads)
    dataset = open_dataset(settings)
    service = ClassifrService(settings, registry=registry, classifier=classifier, dataset=dataset, prediction_log=log)
    if registry is not None:
        service.refresh()  # loads the canary's candidate, if any
    service.attach_hub(hf_api=hf_api, sync=open_sync(settings, dataset, hf_api=hf_api, known=service.known_labels))
    return service


def open_dataset(settings: Settings):
    """The project dataset under CLASSIFR_HOME, with the image limits of the settings."""
    from classifr.core.images import ImageLimits
    from classifr.data.dataset import ProjectDataset

    limits = ImageLimits(
        max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels,
        max_decoded_bytes=settings.max_decoded_bytes,
    )
    return ProjectDataset(settings.dataset_dir, limits=limits)


def open_prediction_log(settings: Settings):
    """The SQLite prediction log under CLASSIFR_HOME, or None when CLASSIFR_PREDICTION_LOG=0."""
    if not settings.prediction_log:
        return None
    from classifr.monitoring.log import PredictionLog

    return PredictionLog(
        settings.prediction_log_path, store_images=settings.store_images, max_images=settings.max_stored_images,
        thumbnail_retention_days=settings.thumbnail_retention_days,
    )


def _ensure_default(registry: ModelRegistry, default_version: DefaultVersion) -> None:
    from classifr.app.bootstrap import ensure_default_version

    ensure_default_version(registry, default_version)
