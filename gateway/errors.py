"""One catalogue of gateway errors, rendered in the OpenAI error shape by one handler.

    raise InvalidRequest("`messages` must be a non-empty array of message objects", param="messages")

Each class fixes its HTTP status, OpenAI error `type`, `code` and log level, so call sites only say
what went wrong. Third-party exceptions are translated where they enter (see `upstream.py`).
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import orjson


class GatewayError(Exception):
    status: ClassVar[int] = 500
    type: ClassVar[str] = "server_error"
    code: ClassVar[str | None] = None
    log_level: ClassVar[int] = logging.ERROR

    def __init__(self, message: str, *, param: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers = headers or {}

    @property
    def error_type(self) -> str:
        """The short name stored in the ledger's `error_type`."""
        return self.code or self.type

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def render(self) -> bytes:
        return orjson.dumps(self.body())


class InternalError(GatewayError):
    """A bug of ours: the request still gets a record and an OpenAI-shaped 500, never a traceback."""

    code = "internal_error"


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"
    log_level = logging.INFO


class BodyTooLarge(InvalidRequest):
    status = 413
    code = "request_too_large"


class ClientGone(InvalidRequest):
    """The client left before its request was read; the answer goes nowhere, so it is logged quietly."""

    status = 499  # nginx's "client closed request"; no client reads it
    code = "client_disconnected"


class AuthenticationFailed(GatewayError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"
    log_level = logging.INFO


class PermissionDenied(GatewayError):
    status = 403
    type = "permission_error"
    code = "forbidden"
    log_level = logging.INFO


class UnsupportedMediaType(InvalidRequest):
    status = 415
    code = "unsupported_media_type"


class ModelNotFound(InvalidRequest):
    status = 404
    code = "model_not_found"


class NotFound(InvalidRequest):
    status = 404
    code = "not_found"


class Conflict(InvalidRequest):
    status = 409
    code = "conflict"


class RateLimited(GatewayError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"
    log_level = logging.INFO


class BudgetExceeded(RateLimited):
    code = "insufficient_quota"


class UpstreamError(GatewayError):
    """The upstream answered with an error or could not be reached, after retries and fallbacks."""

    status = 502
    type = "upstream_error"
    code = "upstream_error"
    log_level = logging.WARNING

    def __init__(self, message: str, *, status: int = 502, body: bytes | None = None, **kw: Any):
        super().__init__(message, **kw)
        self.status = status  # type: ignore[misc]
        self.upstream_body = body

    def render(self) -> bytes:
        # An upstream's own OpenAI-shaped error is more useful to the client than ours: pass it on.
        if self.upstream_body:
            try:
                parsed = orjson.loads(self.upstream_body)
                if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
                    return self.upstream_body
            except orjson.JSONDecodeError:
                pass
        return super().render()


class UpstreamTimeout(UpstreamError):
    code = "upstream_timeout"

    def __init__(self, message: str, **kw: Any):
        super().__init__(message, status=504, **kw)


class UpstreamUnavailable(UpstreamError):
    code = "upstream_unavailable"


class UpstreamTruncated(UpstreamError):
    """A stream that ended without `[DONE]`: the answer may be cut short, so it is not a success."""

    code = "upstream_truncated"
