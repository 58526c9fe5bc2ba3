"""Assemble the Blocks app from the services and launch it."""

from __future__ import annotations

import logging
import os
import time
from importlib import resources
from pathlib import Path

import gradio as gr
from fastapi.responses import JSONResponse, Response
from starlette.middleware import Middleware

from classifr.api.app import build_api, mount_api
from classifr.core.config import Settings
from classifr.app.project import open_service
from classifr.app.service import ClassifrService
from classifr.ui.classify import build_classify_tab
from classifr.ui.model import build_model_tab
from classifr.ui.monitor import build_monitor_tab
from classifr.ui.requests import ArrivalTime
from classifr.ui.teach import build_teach_tab
from classifr.ui.train import build_train_tab
from classifr.ui.versions import build_versions_tab

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp"}
MAX_EXAMPLES = 12
GRADIO_ANALYTICS_EVERY = 1000  # events between two rebuilds of Gradio's own analytics summary


def example_images(settings: Settings) -> list[str]:
    """Images from CLASSIFR_EXAMPLES_DIR when set, else the two photos that ship with scikit-learn."""
    if settings.examples_dir is not None:
        files = sorted(p for p in settings.examples_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        return [str(p) for p in files[:MAX_EXAMPLES]]
    folder = resources.files("sklearn.datasets") / "images"
    return [str(Path(str(folder)) / name) for name in ("china.jpg", "flower.jpg")]


def build_app(service: ClassifrService) -> gr.Blocks:
    with gr.Blocks(title="Classifr") as demo:
        gr.Markdown("# Classifr\nAn open image classifier you can watch and teach.")
        if service.settings.hf_oauth:
            # Contributions are credited to the signed-in Hugging Face user, else "anonymous".
            gr.LoginButton()
        with gr.Tab("Classify"):
            build_classify_tab(service, example_images(service.settings))
        with gr.Tab("Teach") as teach_tab:
            build_teach_tab(service, demo, teach_tab)
        if service.has_registry:
            with gr.Tab("Train") as train_tab:
                build_train_tab(service, demo, train_tab)
        with gr.Tab("Monitor"):
            build_monitor_tab(service, demo)
        with gr.Tab("Model"):
            build_model_tab(service, demo)
        with gr.Tab("Versions"):
            build_versions_tab(service, demo)
    return demo


def serve(settings: Settings, *, block: bool = True) -> gr.Blocks:
    """Build the services once, then the UI, and launch; `block=False` returns the running app."""
    started = time.perf_counter()
    # The page answers while the model loads in the background (docs/speed.md, "Start-up").
    service = open_service(settings, load_in_background=True, configure_runtime=True)
    # Local registry: a file read every 5 s; Hub registry: one small download a minute.
    service.follow_production(60.0 if settings.registry_repo else 5.0)
    demo = build_app(service)
    # Gradio rebuilds a pandas summary of its last (up to 10,000) events after every event, for its
    # own monitoring page: work that grows with the event count. Classifr has its own monitoring,
    # so the summary is refreshed every 1,000 events instead (an explicit
    # GRADIO_ANALYTICS_CACHE_FREQUENCY still wins). Measured at 2,400 events (16 callers, 120 s):
    # 20.1 against 19.3 requests/s, within the noise there; the cost it removes keeps growing.
    os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", str(GRADIO_ANALYTICS_EVERY))
    demo.queue(default_concurrency_limit=4)
    logger.info("Classifr ready in %.1f s, serving %s", time.perf_counter() - started, service.serving_version)
    try:
        _launch(demo, service, block)
    finally:
        if block:
            service.close()  # push the dataset's last changes to the Hub before exiting
    return demo


def _launch(demo: gr.Blocks, service: ClassifrService, block: bool) -> None:
    settings = service.settings
    demo.launch(
        server_name=settings.server_name,
        server_port=settings.server_port,
        max_file_size=settings.max_image_bytes,
        show_error=True,
        prevent_thread_lock=True,
        allowed_paths=[str(p) for p in [settings.examples_dir] if p],
        # Stamps each request's arrival, so a predict event knows how long it waited in Gradio's queue.
        app_kwargs={"middleware": [Middleware(ArrivalTime)]},
    )
    add_metrics_route(demo, service)
    add_health_route(demo, service)
    # Programs call /v1 on the same port, beside the UI and without Gradio's queue (docs/api.md).
    mount_api(demo.app, build_api(service))
    if block:
        demo.block_thread()


def add_metrics_route(demo: gr.Blocks, service: ClassifrService) -> None:
    """Prometheus scrapes `GET /metrics` on the app's own server: no second port to open on a Space."""

    def metrics() -> Response:
        return Response(service.metrics_text(), media_type=service.metrics_content_type)

    demo.app.add_api_route("/metrics", metrics, methods=["GET"], include_in_schema=False)


def add_health_route(demo: gr.Blocks, service: ClassifrService) -> None:
    """`GET /health`: 200 `{"status": "ok", "version"}` once the model can predict; 503 with
    "loading" (start-up) or "failed" and the reason, so a load balancer waits for a ready replica."""

    def health() -> JSONResponse:
        state = service.health()
        return JSONResponse(state, status_code=200 if state["status"] == "ok" else 503)

    demo.app.add_api_route("/health", health, methods=["GET"], include_in_schema=False)
