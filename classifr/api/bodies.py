"""Reading a /v1 request body within its size limit, and the images in it.

Bodies are read by the routes themselves, after the guard (classifr.api.guard) has passed the
caller: FastAPI would read a declared body before any dependency runs. Three shapes carry images
(docs/api.md, "Requests"):

* the raw bytes of one image as the body, any or no Content-Type (what huggingface_hub's
  InferenceClient sends without parameters);
* JSON `{"inputs": "<base64 image>", "parameters": {...}}` (InferenceClient with parameters);
* multipart/form-data with one or more files.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from classifr.api.errors import ApiError

JSON_OVERHEAD_BYTES = 64 * 1024  # field names, parameters, a multipart boundary per file
MAX_LABEL_CHARS = 200
ModelT = TypeVar("ModelT", bound=BaseModel)


@dataclass
class ImageRequest:
    """The images of one request, the name each is called in errors, and the other fields."""

    images: list[bytes]
    names: list[str]
    fields: dict[str, Any] = field(default_factory=dict)  # JSON "parameters", or multipart text fields


def request_limit(max_image_bytes: int, images: int = 1) -> int:
    """Bytes a request may have: base64 makes an image 4/3 larger, plus room for the fields."""
    return images * (math.ceil(max_image_bytes * 4 / 3) + JSON_OVERHEAD_BYTES)


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, or 413 as soon as it is known to be larger than `limit` (from its
    Content-Length before reading anything, else while it streams in)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, f"Content-Length must be a number of bytes, got {declared!r}")
        if int(declared) > limit:
            raise ApiError(413, f"the request is {_mb(int(declared))}; the limit is {_mb(limit)}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"the request is over {_mb(limit)}, the limit")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_images(request: Request, *, limit: int, max_images: int) -> ImageRequest:
    body = await read_body(request, limit)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json":
        return _from_json(body)
    if kind == "multipart/form-data":
        return await _from_form(request, body, max_images)
    if not body:
        raise ApiError(400, "the request has no image: send the image's bytes as the body")
    return ImageRequest([body], ["the request body"])


async def read_model(request: Request, model: type[ModelT], limit: int) -> ModelT:
    """A small JSON body checked against a pydantic model; 422 naming the first bad field."""
    body = await read_body(request, limit)
    try:
        return model.model_validate_json(body or b"{}")
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ApiError(422, f"{where}: {first['msg']}" if where else first["msg"]) from None


def json_object(body: bytes, shape: str) -> dict[str, Any]:
    """The body parsed as a JSON object; 400 naming the `shape` expected otherwise."""
    try:
        payload = json.loads(body)
    except ValueError as err:
        raise ApiError(400, f"the body is not valid JSON: {err}") from None
    if not isinstance(payload, dict):
        raise ApiError(400, f"the body must be an object {shape}")
    return payload


def _from_json(body: bytes) -> ImageRequest:
    payload = json_object(body, '{"inputs": "<base64 image>", "parameters": {...}}')
    if "inputs" not in payload:
        raise ApiError(400, 'a JSON body must be an object {"inputs": "<base64 image>", "parameters": {...}}')
    inputs, parameters = payload["inputs"], payload.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise ApiError(400, f"parameters must be an object, got {type(parameters).__name__}")
    return ImageRequest([decode_base64(inputs, "inputs")], ["inputs"], dict(parameters))


def decode_base64(value: Any, name: str) -> bytes:
    """An image sent as base64 text (a `data:` URL prefix is allowed); URLs are never fetched."""
    if not isinstance(value, str) or not value:
        raise ApiError(400, f"{name} must be the image as base64 text, got {type(value).__name__}")
    if value.startswith(("http://", "https://")):
        raise ApiError(400, f"{name} is a URL; Classifr does not fetch images: send the image's bytes")
    if value.startswith("data:"):
        value = value.partition(",")[2]
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, f"{name} is not valid base64") from None


async def _from_form(request: Request, body: bytes, max_images: int) -> ImageRequest:
    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=max_images + 1, max_fields=100)
    except Exception as err:  # noqa: BLE001 - Starlette raises several kinds for a malformed form
        raise ApiError(400, f"the multipart form cannot be read: {err}") from None
    images, names, fields = [], [], {}
    try:
        for key, value in form.multi_items():
            if isinstance(value, str):
                fields[key] = value
            else:
                images.append(await value.read())
                names.append(_file_name(value.filename) or f"file {len(images)}")
    finally:
        await form.close()
    if not images:
        raise ApiError(400, "the form has no file: send each image as a file field")
    if len(images) > max_images:
        raise ApiError(413, f"{len(images)} images in one request; at most {max_images}")
    return ImageRequest(images, names, fields)


def _file_name(name: str | None) -> str | None:
    """The file's own name, without any folder a client sent with it."""
    if not name:
        return None
    return name.replace("\\", "/").rsplit("/", 1)[-1][:MAX_LABEL_CHARS] or None


def _mb(size: int) -> str:
    return f"{size / 1024 / 1024:.1f} MB"
