"""Every /v1 error is JSON `{"error": "<one line>"}` with the status that says what kind it is.

The line is the one the UI shows for the same mistake (`str()` of the ClassifrError the service
raised); the status comes from the error's type (docs/api.md, "Errors").
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from classifr.core.errors import (
    ClassifrError,
    ImageTooLargeError,
    TokenError,
    VersionCheckError,
    VersionNotFoundError,
)
from classifr.core.storage import StorageError

logger = logging.getLogger(__name__)

# Most specific first: the first class the error is an instance of decides its status.
STATUS_OF_ERROR: tuple[tuple[type[Exception], int], ...] = (
    (VersionNotFoundError, 404),
    (ImageTooLargeError, 413),
    (PermissionError, 403),  # not a maintainer (classifr.app.access)
    (StorageError, 507),  # Insufficient Storage: the server could not store it; nothing was kept
    (VersionCheckError, 409),  # the version exists but failed its checks
    (TokenError, 500),  # the tokens file cannot be read: the server's fault, not the caller's
    (ClassifrError, 400),
)


class ApiError(Exception):
    """An error the API itself detects (a missing token, a body too large): status, line, headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def status_of(err: ClassifrError) -> int:
    return next(status for kind, status in STATUS_OF_ERROR if isinstance(err, kind))


def install_error_handlers(api: FastAPI) -> None:
    """JSON errors for everything raised under /v1, a traceback in the log only for bugs."""

    async def api_error(_request: Request, err: ApiError) -> JSONResponse:
        return error_response(err.status, err.message, err.headers)

    async def classifr_error(request: Request, err: ClassifrError) -> JSONResponse:
        status = status_of(err)
        if status >= 500:
            logger.warning("%s %s: %s", request.method, request.url.path, err)
        return error_response(status, str(err))

    async def http_error(_request: Request, err: HTTPException) -> JSONResponse:
        return error_response(err.status_code, str(err.detail), getattr(err, "headers", None))

    async def invalid_request(_request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path"))
        return error_response(422, f"{where}: {first.get('msg')}" if where else str(first.get("msg")))

    async def bug(request: Request, err: Exception) -> JSONResponse:
        logger.error("%s %s failed", request.method, request.url.path, exc_info=err)
        return error_response(500, "internal error: the server's log has the details")

    api.add_exception_handler(ApiError, api_error)
    api.add_exception_handler(ClassifrError, classifr_error)
    api.add_exception_handler(HTTPException, http_error)
    api.add_exception_handler(RequestValidationError, invalid_request)
    api.add_exception_handler(Exception, bug)
