"""The one exception tree of insieme.

    InsiemeError
    ├── ConfigError              bad flags or model file; the CLI prints it and exits non-zero
    ├── EngineError              the engine failed while serving (HTTP 500, no traceback)
    └── APIError                 anything that becomes an HTTP error body
        ├── InvalidRequestError  400, names the offending ``param``
        ├── AuthenticationError  401
        ├── ModelNotFoundError   404, lists the served models
        ├── PayloadTooLarge      413, the request body is over --max-request-bytes
        ├── QueueFullError       429 with Retry-After
        ├── RateLimitError       429 with Retry-After: a key's requests or tokens per minute
        ├── ServiceUnavailable   503 (loading, shutting down)
        └── RequestTimeout       504, the request ran past --request-timeout

Client mistakes raise typed errors; the API layer turns each into the contract's body
``{"error": {"message", "type", "param", "code"}}``. ``assert`` is only for invariants.
"""

from __future__ import annotations


class InsiemeError(Exception):
    """Base of every error insieme raises on purpose."""


class ConfigError(InsiemeError):
    """A flag, config value or model file is unusable."""


class EngineError(InsiemeError):
    """The engine failed while running a request."""


class APIError(InsiemeError):
    """An error with an HTTP status and the contract's error body."""

    status_code: int = 500
    error_type: str = "server_error"
    default_code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.headers: dict[str, str] = {}

    def body(self) -> dict[str, object]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequestError(APIError):
    status_code = 400
    error_type = "invalid_request_error"


class AuthenticationError(APIError):
    status_code = 401
    error_type = "authentication_error"
    default_code = "invalid_api_key"


class ModelNotFoundError(APIError):
    status_code = 404
    error_type = "invalid_request_error"
    default_code = "model_not_found"


class NotFoundError(APIError):
    status_code = 404
    error_type = "invalid_request_error"
    default_code = "not_found"


class QueueFullError(APIError):
    status_code = 429
    error_type = "rate_limit_error"
    default_code = "queue_full"

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after)}


class PayloadTooLarge(APIError):
    status_code = 413
    error_type = "invalid_request_error"
    default_code = "request_too_large"


class RateLimitError(APIError):
    status_code = 429
    error_type = "rate_limit_error"
    default_code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(max(1, retry_after))}


class ServiceUnavailable(APIError):
    status_code = 503
    error_type = "server_error"
    default_code = "service_unavailable"


class InternalError(APIError):
    status_code = 500
    error_type = "server_error"
    default_code = "internal_error"


class RequestTimeout(APIError):
    status_code = 504
    error_type = "timeout_error"
    default_code = "request_timeout"
