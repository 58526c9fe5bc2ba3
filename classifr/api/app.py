"""The /v1 application: a FastAPI app of its own, mounted on the Gradio app's server at /v1.

Its own app, so that /v1 has its own OpenAPI document (/v1/openapi.json, docs at /v1/docs), its own
JSON errors, and nothing of Gradio's queue. A /v2 would be a second app mounted beside it, sharing
the service (docs/api.md, "Versions of the API").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from fastapi import FastAPI
from starlette.routing import Mount

from classifr.api.batching import PredictionPool
from classifr.api.bodies import request_limit
from classifr.api.errors import install_error_handlers
from classifr.api.guard import Guard, RateLimit
from classifr.api.routes import router
from classifr.app.service import ClassifrService
from classifr.app.tokens import TokenStore
from classifr.core.config import Settings

logger = logging.getLogger(__name__)

PREFIX = "/v1"
API_VERSION = "1.0"


@dataclass(frozen=True)
class ApiContext:
    """What the routes use: the service, the guard of its callers, and the pool that runs predictions."""

    service: ClassifrService
    guard: Guard
    pool: PredictionPool

    @property
    def settings(self) -> Settings:
        return self.service.settings

    def body_limit(self, images: int = 1) -> int:
        """Bytes a request carrying `images` images may have (classifr.api.bodies.request_limit)."""
        return request_limit(self.settings.max_image_bytes, images)


def build_api(service: ClassifrService) -> FastAPI:
    """The /v1 app for one service; `close_api(api)` stops its worker threads."""
    settings = service.settings
    api = FastAPI(
        title="Classifr API", version=API_VERSION, openapi_url="/openapi.json", docs_url="/docs", redoc_url=None,
        description=(
            "Classify images, explain and correct predictions, and manage model versions (docs/api.md). "
            "What is kept: each prediction is logged with a small thumbnail of the photo (deleted after "
            f"{settings.thumbnail_retention_days} days unless the prediction is confirmed or corrected) and the "
            f"caller's address (cleared after {settings.thumbnail_retention_days} days); a photo sent with "
            "feedback is stored in the project dataset. Only the project's maintainers see them (docs/privacy.md)."
        ),
    )
    guard = Guard(TokenStore(settings.home), RateLimit(settings.api_rate_limit), public=settings.api_public)
    api.state.context = ApiContext(service=service, guard=guard, pool=prediction_pool(service))
    install_error_handlers(api)
    api.include_router(router)
    return api


def prediction_pool(service: ClassifrService) -> PredictionPool:
    settings = service.settings

    def predict(images, names, clients, version, top_k):
        return service.predict_batch(images, names=names, clients=clients, version=version, top_k=top_k, origin="api")

    return PredictionPool(predict, workers=settings.api_workers, max_batch=settings.max_batch_size)


def mount_api(server: FastAPI, api: FastAPI) -> None:
    """Serve `api` under /v1 on `server` (the Gradio app's FastAPI), before Gradio's own routes."""
    server.router.routes.insert(0, Mount(PREFIX, app=api))
    logger.info("HTTP API at %s (docs at %s/docs)", PREFIX, PREFIX)


def close_api(api: FastAPI) -> None:
    api.state.context.pool.close()
