"""API errors and how every failure becomes a JSON body `{"msg": ...}`.

Handlers raise `ApiError`; nothing else builds an error response, so the shape
is the same everywhere and no handler leaks an internal message.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = structlog.get_logger("defguard.core.errors")


class ApiError(Exception):
    def __init__(self, status: int, msg: str | None = None, *, code: str | None = None) -> None:
        super().__init__(msg)
        self.status = status
        self.msg = msg if msg is not None else HTTPStatus(status).phrase
        self.code = code

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"msg": self.msg}
        if self.code:
            body["code"] = self.code
        return body


def bad_request(msg: str, *, code: str | None = None) -> ApiError:
    return ApiError(400, msg, code=code)


def not_found(msg: str) -> ApiError:
    return ApiError(404, msg)


def conflict(msg: str) -> ApiError:
    return ApiError(409, msg)


def forbidden(msg: str = "access denied") -> ApiError:
    return ApiError(403, msg)


def unauthorized(msg: str) -> ApiError:
    return ApiError(401, msg)


def _describe_validation(exc: RequestValidationError) -> tuple[int, str]:
    """Name the offending field; malformed JSON is a 400, a wrong shape a 422."""
    parts = []
    status = 422
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body",)]
        if err.get("loc", ("",))[0] == "path":
            # An unparsable path parameter (e.g. a non-integer id) is a bad request.
            status = 400
            loc = loc[1:]
        if err.get("type") == "json_invalid":
            status = 400
            parts.append(f"malformed JSON: {err.get('ctx', {}).get('error', err.get('msg'))}")
            continue
        where = ".".join(loc) or "body"
        parts.append(f"{where}: {err.get('msg')}")
    return status, "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        status, msg = _describe_validation(exc)
        return JSONResponse({"msg": msg}, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        msg = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        return JSONResponse({"msg": msg}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(IntegrityError)
    async def _integrity(_: Request, exc: IntegrityError) -> JSONResponse:
        # A race lost to a concurrent writer (e.g. two Cores creating the same
        # name): the transaction rolled back, nothing was written.
        constraint = getattr(getattr(exc.orig, "diag", None), "constraint_name", None)
        return JSONResponse(
            {"msg": f"object already exists ({constraint or 'unique constraint'})"},
            status_code=409,
        )

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", error_type=type(exc).__name__)
        return JSONResponse({"msg": "Internal server error"}, status_code=500)
