"""One typed hierarchy of errors for the whole frontend.

Library code raises these; only the edges (HTTP handlers, the CLI) turn them into responses or exit codes.
Every client-facing error carries its HTTP status and OpenAI error ``type`` so that the HTTP layer can
render ``{"error": {"message", "type", "param", "code"}}`` without guessing.
"""

from __future__ import annotations


class FrontendError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(FrontendError):
    """Invalid configuration: a bad flag, env var or config-file value (the message names the flag)."""


class RequestError(FrontendError):
    """An error reported to the client; ``status`` is the HTTP status, ``error_type`` OpenAI's ``type``."""

    status: int = 400
    error_type: str = "invalid_request_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


class InvalidRequest(RequestError):
    """Malformed JSON, a missing or invalid field, a feature asked for that is not available (400)."""


class TemplateError(InvalidRequest):
    """The chat template failed to render the request's messages (400, with the template's message)."""


class ContextLengthExceeded(InvalidRequest):
    """Prompt plus max_tokens is longer than the model's context window (400). The counts (``requested``: the
    completion budget asked for, None when none was) let a front door word the error its own way."""

    def __init__(self, message: str, param: str = "messages", *, prompt_tokens: int = 0, context_length: int = 0,
                 requested: int | None = None) -> None:
        super().__init__(message, param=param, code="context_length_exceeded")
        self.prompt_tokens = prompt_tokens
        self.context_length = context_length
        self.requested = requested


class ModelNotFound(RequestError):
    """The requested model is not served by any registered worker (404)."""

    status = 404
    error_type = "not_found_error"

    def __init__(self, model: str) -> None:
        super().__init__(f"The model `{model}` does not exist.", param="model", code="model_not_found")


class PayloadTooLarge(RequestError):
    """The request body is over the configured limit (413)."""

    status = 413

    def __init__(self, limit_bytes: int) -> None:
        super().__init__(f"Request body is larger than the limit of {limit_bytes} bytes.", code="payload_too_large")


class Unauthorized(RequestError):
    """With ``--api-key``: the request carries no API key, or one that is not configured (401). The message never
    repeats the key it got."""

    status = 401

    def __init__(self, message: str) -> None:
        super().__init__(message, code="invalid_api_key")


class NotFoundRoute(RequestError):
    """No such endpoint (404)."""

    status = 404
    error_type = "not_found_error"


class MethodNotAllowed(RequestError):
    """The endpoint exists but not for this HTTP method (405)."""

    status = 405


class ServiceUnavailable(RequestError):
    """No live worker for the model, the service is shutting down, or a worker died mid-request (503)."""

    status = 503
    error_type = "service_unavailable"


class WorkersBusy(ServiceUnavailable):
    """Every worker of the model is over its busy thresholds: load shedding. ``status`` is the daemon's
    ``--overload-status-code`` (529 by default, as Dynamo's DYN_HTTP_OVERLOAD_STATUS_CODE)."""

    def __init__(self, message: str, *, status: int = 529) -> None:
        super().__init__(message, code="all_workers_busy")
        self.status = status


class EngineError(RequestError):
    """The worker reported an error while generating (502: the gateway is fine, the backend is not)."""

    status = 502
    error_type = "backend_error"


class WorkerGone(EngineError):
    """The worker serving a request went away (lease expired, unregistered, connection dropped) before the
    request ended: nothing more will come from it (502)."""


def worker_failure(message: str, *, invalid: bool) -> RequestError:
    """What a client gets for a request its worker failed: a 400 when the engine refused the request
    (``invalid``), else a 502."""
    return InvalidRequest(message) if invalid else EngineError(message)


class SlowReader(RequestError):
    """A streamed response's client read so slowly that the gateway held more than the configured backlog for
    longer than the configured time (``--max-stream-backlog-mb``, ``--slow-reader-timeout-s``): the request is
    aborted (408)."""

    status = 408
    error_type = "timeout_error"

    def __init__(self, backlog_bytes: int, timeout_s: float) -> None:
        super().__init__(f"the client read the stream too slowly: {backlog_bytes} bytes were still unread after "
                         f"{timeout_s:g} s; the request was aborted", code="slow_reader")


class InternalError(RequestError):
    """A bug in the frontend: logged with its traceback, reported as 500 without internals."""

    status = 500
    error_type = "internal_error"
