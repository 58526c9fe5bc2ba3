"""The /v1 routes. Each checks its caller first (classifr.api.guard), then reads its body
(classifr.api.bodies), then calls the service: predictions through the worker pool
(classifr.api.batching), everything else on Starlette's thread pool. Shapes: classifr.api.schemas;
the reference with examples: docs/api.md."""

from __future__ import annotations

import asyncio
import io
import logging
import time
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from classifr.api import schemas
from classifr.api.batching import PredictionCall
from classifr.api.bodies import (
    ImageRequest,
    decode_base64,
    json_object,
    read_body,
    read_images,
    read_model,
)
from classifr.api.errors import ApiError
from classifr.api.guard import Caller, maintainer_caller, public_caller
from classifr.app.jobs import JobState
from classifr.data.dataset import AddResult
from classifr.versions.registry import VersionInfo

logger = logging.getLogger(__name__)

MAX_TOP_K = 100
SMALL_BODY_BYTES = 64 * 1024  # the JSON of a maintainer route
EXPLANATION_METHODS = ("gradcam", "gradcam++", "ig", "occlusion")
EXPLANATION_SIDE = 768  # px: the longer side of an explanation PNG, as the app shows it
ERRORS = {status: {"model": schemas.ErrorMessage} for status in (400, 401, 404, 413, 422, 429)}

router = APIRouter()


def context_of(request: Request) -> Any:
    return request.app.state.context


# --- prediction ---------------------------------------------------------------------------------


@router.post(
    "/models/{ref}", response_model=list[schemas.LabelScore], responses=ERRORS, tags=["prediction"],
    summary="Classify one image (the Hugging Face inference shape)",
    openapi_extra={"requestBody": {"content": {
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        "application/json": {"schema": {"type": "object", "properties": {
            "inputs": {"type": "string", "description": "the image, base64"},
            "parameters": {"type": "object", "properties": {"top_k": {"type": "integer"}}}}}},
    }}},
)
async def classify(ref: str, request: Request, caller: Caller = Depends(public_caller)) -> Response:
    """`ref`: a version (`v3`) or an alias (`production`, `candidate`, `latest`). Only `production`
    is shared with the canary; anything else is served by exactly that version. The answer is a
    list of `{label, score}`, best first; the served version, the prediction's id and the server's
    latency are in the X-Classifr-Version, X-Prediction-Id and X-Latency-Ms headers."""
    started = time.perf_counter()
    context = context_of(request)
    version = await _pinned(context, ref)
    body = await read_images(request, limit=context.body_limit(), max_images=1)
    top_k = _top_k(body.fields.get("top_k", request.query_params.get("top_k")), context.settings.top_k)
    _check_function(body.fields.get("function_to_apply"))
    result = (await _predict(context, body, caller, version, top_k))[0]
    if result.error is not None:
        raise ApiError(400, result.error)
    return JSONResponse(
        [p.to_json() for p in result.predictions],
        headers={"X-Classifr-Version": result.version, "X-Prediction-Id": result.id,
                 "X-Latency-Ms": f"{(time.perf_counter() - started) * 1000:.1f}"},
    )


@router.post(
    "/predictions", response_model=schemas.Predictions, responses=ERRORS, tags=["prediction"],
    summary="Classify one or more images",
    openapi_extra={"requestBody": {"content": {
        "multipart/form-data": {"schema": {"type": "object", "properties": {
            "images": {"type": "array", "items": {"type": "string", "format": "binary"}}}}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    }}},
)
async def predictions(
    request: Request, version: str = "production", top_k: int | None = None, caller: Caller = Depends(public_caller)
) -> schemas.Predictions:
    """Files of a multipart form (up to CLASSIFR_MAX_BATCH), or one image as the raw body. Each
    image gets its id (for feedback), the version that served it, its labels and the latency; an
    image that cannot be read gets its `error` instead, and the others are still classified."""
    started = time.perf_counter()
    context = context_of(request)
    pinned = await _pinned(context, version)
    most = context.settings.max_batch_size
    body = await read_images(request, limit=context.body_limit(most), max_images=most)
    results = await _predict(context, body, caller, pinned, _top_k(top_k, context.settings.top_k))
    latency_ms = (time.perf_counter() - started) * 1000
    return schemas.Predictions(predictions=[_image_prediction(result, latency_ms) for result in results])


async def _pinned(context: Any, ref: str) -> str | None:
    """None for the unpinned production alias (the canary applies); else the version, checked now
    so that an unknown one is a 404 before the image is read."""
    if ref == "production":
        return None
    return await run_in_threadpool(context.service.resolve_version, ref)


async def _predict(context: Any, body: ImageRequest, caller: Caller, version: str | None, top_k: int) -> list[Any]:
    call = PredictionCall(images=body.images, names=body.names, client=caller.address, version=version, top_k=top_k)
    return await asyncio.wrap_future(context.pool.submit(call))


def _image_prediction(result: Any, latency_ms: float) -> schemas.ImagePrediction:
    if result.error is not None:
        return schemas.ImagePrediction(image=result.image, error=result.error)
    return schemas.ImagePrediction(
        image=result.image, id=result.id, version=result.version, variant=result.variant, latency_ms=round(latency_ms, 1),
        labels=[schemas.LabelScore(label=p.label, score=p.score) for p in result.predictions],
    )


def _top_k(value: Any, default: int) -> int:
    if value is None:
        return default
    try:
        top_k = int(value)
    except (TypeError, ValueError):
        raise ApiError(400, f"top_k must be a whole number from 1 to {MAX_TOP_K}, got {value!r}") from None
    if not 1 <= top_k <= MAX_TOP_K or isinstance(value, (bool, float)):
        raise ApiError(400, f"top_k must be a whole number from 1 to {MAX_TOP_K}, got {value!r}")
    return top_k


def _check_function(value: Any) -> None:
    # The Hugging Face task lets a caller pick sigmoid: Classifr's scores are always softmax.
    if value not in (None, "softmax"):
        raise ApiError(400, f"function_to_apply must be 'softmax' (Classifr's scores are softmax), got {value!r}")


# --- feedback and explanations --------------------------------------------------------------------


@router.post(
    "/feedback", response_model=AddResult, responses={**ERRORS, 507: {"model": schemas.ErrorMessage}},
    tags=["feedback"], summary="Confirm or correct a prediction",
    openapi_extra={"requestBody": {"content": {"application/json": {"schema": {"type": "object", "properties": {
        "prediction_id": {"type": "string"}, "label": {"type": "string"}, "confirm": {"type": "boolean"},
        "image": {"type": "string", "description": "the photo that was classified, base64"}},
        "required": ["prediction_id", "image"]}}}}},
)
async def feedback(request: Request, caller: Caller = Depends(public_caller)) -> AddResult:
    """The photo with `label` (a correction, or a new category) or `confirm: true`, naming the
    prediction it answers. The model's version and scores come from the server's prediction log,
    never from the caller; the photo must be the one that prediction was made for."""
    context = context_of(request)
    body = await read_images(request, limit=context.body_limit(), max_images=1) \
        if _is_form(request) else await _feedback_json(request, context)
    prediction_id, label = _answer(body.fields)
    result = await run_in_threadpool(
        context.service.record_feedback, body.images[0], label, prediction=prediction_id,
        contributor=caller.token_name, name=body.names[0],
    )
    if result.status == "rejected":  # nothing was stored: an error for the one photo of this call
        paused = context.service.storage_status()["paused"]
        raise ApiError(507 if paused else 400, result.reason or "the photo was not stored")
    return result


async def _feedback_json(request: Request, context: Any) -> ImageRequest:
    payload = json_object(await read_body(request, context.body_limit()), '{"prediction_id", "label" or "confirm", "image"}')
    if "image" not in payload:
        raise ApiError(400, "image is missing: send the photo that was classified (base64); the server keeps no copy to answer with")
    return ImageRequest([decode_base64(payload.pop("image"), "image")], ["image"], payload)


def _answer(fields: dict[str, Any]) -> tuple[str, str | None]:
    unknown = sorted(set(fields) - {"prediction_id", "label", "confirm"})
    if unknown:
        raise ApiError(400, f"unknown field {unknown[0]!r}: send prediction_id, and label or confirm")
    prediction_id = fields.get("prediction_id")
    if not isinstance(prediction_id, str) or not prediction_id:
        raise ApiError(400, "prediction_id is missing: name the prediction this answers (its id)")
    label, confirm = fields.get("label"), fields.get("confirm") in (True, "true", "1")
    if (label is None) == (not confirm):
        raise ApiError(400, "send either label (the right label) or confirm: true, not both or neither")
    if label is not None and not isinstance(label, str):
        raise ApiError(400, f"label must be text, got {type(label).__name__}")
    return prediction_id, label


@router.post(
    "/explanations", responses={**ERRORS, 200: {"content": {"image/png": {}}, "model": schemas.ExplanationDetails}},
    tags=["explanation"], summary="Why the production model decided, as a heatmap",
    openapi_extra={"requestBody": {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}},
)
async def explanations(
    request: Request, method: str = "gradcam", target: str | None = None, format: str = "png",
    caller: Caller = Depends(public_caller),
) -> Response:
    """The image as the body (raw, or a one-file form). `method`: gradcam, gradcam++, ig or occlusion;
    `target`: the label to explain (default the top one); `format`: `png` (the heatmap over the
    photo) or `json` (the scores and the heatmap as numbers)."""
    if method not in EXPLANATION_METHODS:
        raise ApiError(400, f"unknown explanation method {method!r}; choose one of {', '.join(EXPLANATION_METHODS)}")
    if format not in ("png", "json"):
        raise ApiError(400, f"format must be 'png' or 'json', got {format!r}")
    context = context_of(request)
    body = await read_images(request, limit=context.body_limit(), max_images=1)
    result = await run_in_threadpool(
        context.service.explain, body.images[0], method=method, target=target, max_side=EXPLANATION_SIDE, name=body.names[0]
    )
    headers = {"X-Classifr-Version": result.version}
    if format == "json":
        faithfulness = await run_in_threadpool(context.service.faithfulness, body.images[0], result, name=body.names[0])
        details = {**result.to_json(), "heatmap": result.explanation.heatmap.round(3).tolist()}
        return JSONResponse({**details, "faithfulness": faithfulness.to_json()}, headers=headers)
    out = io.BytesIO()
    result.picture.save(out, format="PNG")
    return Response(out.getvalue(), media_type="image/png", headers=headers)


def _is_form(request: Request) -> bool:
    return request.headers.get("content-type", "").lower().startswith("multipart/form-data")


# --- versions and maintainer operations -------------------------------------------------------


@router.get("/models", response_model=schemas.Models, responses=ERRORS, tags=["versions"], summary="Versions and aliases")
async def models(request: Request, caller: Caller = Depends(public_caller)) -> schemas.Models:
    service = context_of(request).service
    versions = await run_in_threadpool(service.list_versions)
    return schemas.Models(
        production=service.serving_version, candidate=service.candidate_version, canary_share=service.canary_share,
        versions=versions, pinned_loaded=service.pinned_versions,
    )


@router.post("/models/{ref}/promote", response_model=VersionInfo, responses={**ERRORS, 403: {"model": schemas.ErrorMessage}},
             tags=["maintainers"], summary="Make a version production")
async def promote(ref: str, request: Request, caller: Caller = Depends(maintainer_caller)) -> VersionInfo:
    """Loads and checks the version first; one that fails its checks is refused (409) and
    production stays where it was. Needs a Classifr token."""
    info = await run_in_threadpool(context_of(request).service.promote, ref)
    logger.info("%s promoted through the API by token %r from %s", info.version, caller.token_name, caller.address)
    return info


@router.post("/rollback", response_model=VersionInfo, responses=ERRORS, tags=["maintainers"],
             summary="Serve the previous production version again")
async def rollback(request: Request, caller: Caller = Depends(maintainer_caller)) -> VersionInfo:
    info = await run_in_threadpool(context_of(request).service.rollback)
    logger.info("rolled back to %s through the API by token %r from %s", info.version, caller.token_name, caller.address)
    return info


@router.put("/canary", response_model=schemas.CanaryState, responses=ERRORS, tags=["maintainers"],
            summary="Set the share of production calls the candidate serves",
            openapi_extra={"requestBody": {"content": {"application/json": {"schema": schemas.CanaryChange.model_json_schema()}}}})
async def canary(request: Request, caller: Caller = Depends(maintainer_caller)) -> schemas.CanaryState:
    change = await read_model(request, schemas.CanaryChange, SMALL_BODY_BYTES)
    service = context_of(request).service
    share = await run_in_threadpool(service.set_canary_share, change.share)
    logger.info("canary share set to %.0f%% through the API by token %r", share * 100, caller.token_name)
    return schemas.CanaryState(share=share, candidate=service.candidate_version)


@router.get("/training", response_model=JobState, responses=ERRORS, tags=["versions"],
            summary="The current or last training run")
async def training_status(request: Request, caller: Caller = Depends(public_caller)) -> JobState:
    state = await run_in_threadpool(context_of(request).service.training_status)
    return state


@router.post("/training", response_model=JobState, status_code=202, responses=ERRORS, tags=["maintainers"],
             summary="Start a training run",
             openapi_extra={"requestBody": {"content": {"application/json": {"schema": schemas.TrainingRequest.model_json_schema()}}}})
async def start_training(request: Request, caller: Caller = Depends(maintainer_caller)) -> JobState:
    """`arguments` are those of `classifr train` (docs/retraining.md). One run at a time."""
    run = await read_model(request, schemas.TrainingRequest, SMALL_BODY_BYTES)
    state = await run_in_threadpool(context_of(request).service.start_training, run.arguments)
    logger.info("training started through the API by token %r: %s", caller.token_name, " ".join(run.arguments))
    return state


@router.delete("/training", response_model=JobState, responses=ERRORS, tags=["maintainers"],
               summary="Cancel the running training run")
async def cancel_training(request: Request, caller: Caller = Depends(maintainer_caller)) -> JobState:
    state = await run_in_threadpool(context_of(request).service.cancel_training)
    return state
